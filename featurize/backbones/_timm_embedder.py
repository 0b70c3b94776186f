"""Wrap a timm classifier so that forward(x) returns (embeddings, logits)."""
from __future__ import annotations

import torch
from torch import nn


class TimmEmbedder(nn.Module):
    """forward(x) -> (embeddings, logits): the classifier's input (timm "pre-logits") and its output.

    For EfficientNet this is global-average-pooled features (1280-d for B0), exactly what the model
    gives with its classifier replaced by an identity, and `logits = emb @ W.T + b`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, C, H, W)
        emb = self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # (B, D)
        return emb, self.model.get_classifier()(emb)  # (B, D), (B, K)
