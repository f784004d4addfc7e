"""Masked linear layer whose rows are pruned by learnable thresholds.

Each output row ``i`` keeps a score ``mean(|W_i|) - threshold_i``; the row is kept while the
score is above ``margin``. The step function has no useful derivative, so its gradient is
replaced by a straight-through estimator that passes the incoming gradient wherever the
score lies inside ``window`` of the margin. (The authors' reference passes it only where the
input exceeds 1 in magnitude, which never happens for these scores, so their thresholds
never move and the mask is a no-op.)

Design decision: the bias is masked together with its row, so a pruned row outputs exactly
zero. That makes pruning a real removal of the unit, and lets the update codec leave the
whole row (weights and bias) out of an update.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class _StraightThroughStep(torch.autograd.Function):
    """Heaviside step forward; identity gradient inside a window around zero backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.window = window
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        passes = (x.abs() <= ctx.window).to(grad_output.dtype)
        return grad_output * passes, None


def straight_through_step(x: torch.Tensor, window: float = 1.0) -> torch.Tensor:
    """0/1 step of ``x`` whose gradient passes unchanged where ``|x| <= window``."""
    return _StraightThroughStep.apply(x, window)


class MaskedLinear(nn.Module):
    """Linear layer with a learnable per-row pruning threshold.

    Parameters ``weight`` (out x in), ``bias`` (out) and ``threshold`` (out) are all part of
    the state dict, so aggregation averages thresholds together with the weights.
    """

    def __init__(
        self, in_features: int, out_features: int, *, margin: float = 0.0, window: float = 1.0
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.margin = margin
        self.window = window
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.threshold = nn.Parameter(torch.zeros(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.threshold)

    def row_scores(self) -> torch.Tensor:
        """Score per output row; the row is kept while its score exceeds ``margin``."""
        return self.weight.abs().mean(dim=1) - self.threshold

    def mask(self) -> torch.Tensor:
        """Differentiable 0/1 row mask (straight-through gradient)."""
        return straight_through_step(self.row_scores() - self.margin, self.window)

    @torch.no_grad()
    def kept_rows(self) -> torch.Tensor:
        """Boolean vector of the rows that are currently kept."""
        return (self.row_scores() - self.margin) > 0

    def sparsity_penalty(self) -> torch.Tensor:
        """Pruning pressure: decreases as thresholds grow (as in dynamic sparse training)."""
        return torch.exp(-self.threshold).mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask()
        return F.linear(x, self.weight * m.unsqueeze(1), self.bias * m)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, margin={self.margin}"
