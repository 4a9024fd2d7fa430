"""Normalisation layers."""
import torch.nn as nn
from torch import Tensor


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (``nn.LayerNorm``'s parameters
    and state-dict keys: ``weight``, ``bias``)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
