"""What the three regression heads (MLP, ridge, LightGBM) share about their output shape."""
from __future__ import annotations

import numpy as np


class RegressionOutputMixin:
    """A regressor fit on y (n,) predicts (n,), fit on y (n, k) predicts (n, k); predictions are
    clipped to the head's `clip` (low, high) when it has one. The shape flag is saved with the head.

    Put it before the head's base class, so that its `_fitted_state` / `_restore_state` wrap the base's.
    """

    def _remember_output_shape(self, y) -> None:
        self._single_output = np.ndim(y) == 1

    def _shaped_output(self, out: np.ndarray) -> np.ndarray:
        clip = getattr(self, "clip", None)
        if clip is not None:
            out = np.clip(out, clip[0], clip[1])
        return out[:, 0] if self._single_output else out

    def _fitted_state(self):
        meta, arrays, texts = super()._fitted_state()
        meta["_single_output"] = bool(self._single_output)
        return meta, arrays, texts

    def _restore_state(self, meta, arrays, texts):
        super()._restore_state(meta, arrays, texts)
        self._single_output = meta["_single_output"]
