"""Multi-layer perceptrons."""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class MLP(nn.Module):
    """``num_layers`` affine layers with ReLU in between (state-dict keys ``layers.{i}.*``).

    Args:
        in_channels (int), hidden_channels (int), out_channels (int): widths.
        num_layers (int): number of affine layers.
        dense (bool): 1x1 convolutions on ``(B, C, H, W)`` maps instead of ``nn.Linear`` on
            ``(..., C)`` tokens.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int, dense: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        affine = (lambda i, o: nn.Conv2d(i, o, 1)) if dense else nn.Linear
        self.layers = nn.ModuleList(affine(i, o) for i, o in zip(widths[:-1], widths[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
