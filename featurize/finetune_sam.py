"""Sharpness-Aware Minimization (Foret et al. 2021) over a base optimizer, as HSE-NN trains with it.

One step, for the loss L at weights w with gradient g = dL/dw(w):

    e = rho * g / ||g||_2            (||.|| over all parameters together)
    w' = w + e;  g' = dL/dw(w')      (a second forward/backward at the perturbed weights)
    w  <- base_step(w, g')           (e.g. Adam with g' as the gradient)

    sam = SAM(params, torch.optim.Adam, rho=0.05, lr=1e-3)
    loss_fn().backward(); sam.first_step(); sam.zero_grad()
    loss_fn().backward(); sam.second_step(); sam.zero_grad()

`state_dict()` / `load_state_dict()` are the base optimizer's (the perturbation lives only inside a step).
"""
from __future__ import annotations

import torch


class SAM:
    def __init__(self, params, base_cls, *, rho: float = 0.05, **base_kwargs):
        if rho < 0:
            raise ValueError(f"rho {rho}: must be >= 0")
        self.base = base_cls(params, **base_kwargs)
        self.param_groups = self.base.param_groups
        self.rho = rho
        self._e: dict[torch.Tensor, torch.Tensor] = {}

    def _params(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield p

    @torch.no_grad()
    def grad_norm(self, scale: float = 1.0) -> torch.Tensor:
        norms = [(p.grad.float() / scale).norm(2) for p in self._params()]
        return torch.stack(norms).norm(2) if norms else torch.zeros(())

    @torch.no_grad()
    def first_step(self, scale: float = 1.0) -> bool:
        """w <- w + rho * g / ||g||; the gradients are divided by `scale` first (fp16 loss scaling).
        Returns False (and perturbs nothing) when the gradient is not finite."""
        norm = self.grad_norm(scale)
        self._e = {}
        if not torch.isfinite(norm):
            return False
        factor = self.rho / (norm + 1e-12)
        for p in self._params():
            e = p.grad.float().div(scale).mul(factor).to(p.dtype)
            p.add_(e)
            self._e[p] = e
        return True

    @torch.no_grad()
    def restore(self) -> None:
        """w' -> w (undo the perturbation)."""
        for p, e in self._e.items():
            p.sub_(e)
        self._e = {}

    def second_step(self) -> None:
        """Back to w, then the base optimizer's step with the gradient taken at w + e."""
        self.restore()
        self.base.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state):
        self.base.load_state_dict(state)
