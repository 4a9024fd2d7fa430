"""Transformer encoder block with a key-padding mask, as used by ReSTR (Kim et al., CVPR
2022): post-norm blocks in the language encoder (Sec. 3.1) and pre-norm blocks in the
multimodal fusion encoder (Sec. 3.2). ``attn.qkv``/``attn.proj``/``fc1``/``fc2`` are plain
linears (GELU FFN, no dropout), stochastic depth optional; the attention is the shared
:class:`~mmseg_ovseg.models.layers.attention.MultiheadAttention`.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import DropPath
from torch import Tensor

from .attention import MultiheadAttention


def padding_bias(valid: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """Additive attention bias ``(B, 1, 1, L)`` from a validity mask ``(B, L)`` (True = a
    real token): 0 for real keys, ``-inf`` for padded ones; None when ``valid`` is None.

    Raises:
        ValueError: a row without any valid key (its softmax would be undefined).
    """
    if valid is None:
        return None
    if valid.dim() != 2:
        raise ValueError(f'padding_bias: valid mask must be (B, L), got {tuple(valid.shape)}')
    if not bool(valid.any(dim=1).all()):
        raise ValueError('padding_bias: a sequence has no valid token')
    bias = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
    bias.masked_fill_(~valid.bool(), float('-inf'))
    return bias[:, None, None, :]


class MaskedTransformerBlock(nn.Module):
    """One encoder block; ``pre_norm=True``: ``x + attn(LN(x))``, ``x + ffn(LN(x))``;
    ``pre_norm=False`` (post-norm): ``LN(x + attn(x))``, ``LN(x + ffn(x))``.

    Args:
        dim (int): token width ``C``.
        num_heads (int): attention heads.
        ffn_dim (int): hidden width of the GELU FFN.
        drop_path (float): stochastic depth rate.
        pre_norm (bool): norm placement (see above).

    Shapes: ``x (B, L, C)``, ``valid (B, L)`` bool (True = real token; padded keys are never
    attended to) -> ``(B, L, C)``. A stack of blocks sharing one mask should build
    ``bias = padding_bias(valid, x.dtype)`` once and pass ``bias=`` to every block instead.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, drop_path: float = 0.0,
                 pre_norm: bool = True):
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = MultiheadAttention(dim, num_heads, fused_qkv=True, fast_path=True)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def ffn(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def forward(self, x: Tensor, valid: Optional[Tensor] = None,
                bias: Optional[Tensor] = None) -> Tensor:
        if valid is not None:
            if bias is not None:
                raise ValueError('MaskedTransformerBlock: pass valid or bias, not both')
            bias = padding_bias(valid, x.dtype)
        if self.pre_norm:
            x = x + self.drop_path(self.attn(self.norm1(x), bias=bias))
            return x + self.drop_path(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop_path(self.attn(x, bias=bias)))
        return self.norm2(x + self.drop_path(self.ffn(x)))


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """1-D sinusoidal position encodings ``(length, dim)`` (Vaswani et al.): ``sin`` on even
    channels, ``cos`` on odd ones, frequencies ``10000^(-2i/dim)``; ``dim`` must be even."""
    if dim % 2:
        raise ValueError(f'sinusoidal_positions: dim must be even, got {dim}')
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe
