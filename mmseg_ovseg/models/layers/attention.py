"""Multi-head attention, written once for every method of the package.

One module, :class:`MultiheadAttention`, covers the attention layers the papers use:

- self-attention with one fused ``qkv`` projection (timm layout: SAN's side adapter, ReSTR's
  encoders; or ``nn.MultiheadAttention``'s packed ``in_proj_weight``/``in_proj_bias``:
  SegViT's class-token self-attention) or cross-attention with separate ``q/k/v``
  projections (ZegCLIP's and SegViT's decoders, DenseCLIP's context decoder);
- an optional additive attention bias (key padding, SAN's attention bias);
- optionally the per-head pre-softmax logits ``q k^T / sqrt(d) + bias``, which ZegCLIP's
  relationship decoder (Eq. 2) and SegViT's ATM read out as mask logits.

Parameter names differ between the official codebases (``q_proj``/``out_proj`` in ZegCLIP and
DenseCLIP, ``q``/``proj`` in SegViT, ``qkv``/``proj`` in timm-style ViTs, ``in_proj_*``/
``out_proj`` in modules built on ``nn.MultiheadAttention``); ``proj_names`` and
``torch_layout`` keep each method's names, so checkpoints load unchanged.

Without logits (and without attention dropout in training) the attention runs on PyTorch's
``scaled_dot_product_attention``; with ``fast_path=True`` it runs on
:func:`mmseg_ovseg.models.layers.fast_path.sdpa`, where bfloat16 CPU inference takes the
query-blocked kernel while the package's fast-path switch is on, which is faster only for
narrow heads (measured for CLIP ViT and SAN's side adapter; slower for DenseCLIP's context
decoder, 4 heads of width 64). With logits the attention is computed explicitly, since the
fused kernels do not expose the scores.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .fast_path import sdpa


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, N, C)`` -> ``(B, heads, N, C / heads)`` (a view)."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, heads, N, d)`` -> ``(B, N, heads * d)``."""
    return x.transpose(1, 2).flatten(2)


class MultiheadAttention(nn.Module):
    """Multi-head scaled dot-product attention (self or cross).

    ``out = proj(concat_h softmax(q_h k_h^T / sqrt(d) + bias) v_h)`` with ``d = C / heads``.

    Args:
        embed_dims (int): token width ``C`` of queries, keys and values.
        num_heads (int): heads; ``C`` must be divisible by it.
        qkv_bias (bool): biases of the q/k/v projections. Default: True.
        fused_qkv (bool): one ``Linear(C, 3C)`` for q, k and v (self-attention only) instead of
            three ``Linear(C, C)``. Default: False.
        attn_drop (float): dropout on the attention weights. Default: 0.
        proj_drop (float): dropout after the output projection. Default: 0.
        proj_names (Sequence[str], optional): attribute (= state-dict) names of the
            projections: ``(qkv, out)`` when fused, ``(q, k, v, out)`` otherwise. Default:
            ``('qkv', 'proj')`` / ``('q_proj', 'k_proj', 'v_proj', 'out_proj')``;
            ``('in_proj', 'out_proj')`` with ``torch_layout``.
        torch_layout (bool): hold the fused projection as ``nn.MultiheadAttention`` does:
            parameters ``<qkv>_weight (3C, C)`` and ``<qkv>_bias (3C,)`` (no ``Linear``),
            initialised as torch does (Xavier-uniform weight, zero biases, drawn after the
            output projection's default init), so state dicts and seeded initial weights
            equal ``nn.MultiheadAttention``'s. Implies ``fused_qkv``. Default: False.
        fast_path (bool): allow the CPU bfloat16 inference kernel (see the module docstring)
            where no logits are returned. Default: False.

    Forward:
        query (Tensor): ``(B, Q, C)``.
        memory (Tensor, optional): ``(B, N, C)`` keys/values; None for self-attention.
        bias (Tensor, optional): additive float bias broadcastable to ``(B, heads, Q, N)``
            (``-inf`` hides a key).
        return_logits (bool): also return the per-head pre-softmax logits.

    Returns:
        Tensor | tuple[Tensor, Tensor]: ``(B, Q, C)``, and with ``return_logits`` the logits
        ``(B, heads, Q, N)``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 fused_qkv: bool = False,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0,
                 proj_names: Optional[Sequence[str]] = None,
                 fast_path: bool = False,
                 torch_layout: bool = False):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}')
        fused_qkv = fused_qkv or torch_layout
        if proj_names is None and torch_layout:
            proj_names = ('in_proj', 'out_proj')
        elif proj_names is None:
            proj_names = ('qkv', 'proj') if fused_qkv else ('q_proj', 'k_proj', 'v_proj',
                                                            'out_proj')
        expected = '(qkv, out)' if fused_qkv else '(q, k, v, out)'
        if len(proj_names) != len(expected.split(',')):
            raise ValueError(f'proj_names must name the {expected} projections, got '
                             f'{tuple(proj_names)}')
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.scale = self.head_dims**-0.5
        self.fused_qkv = fused_qkv
        self.torch_layout = torch_layout
        self.fast_path = fast_path
        self.proj_names = tuple(proj_names)
        if torch_layout:
            self._init_torch_layout(embed_dims, qkv_bias)
        else:
            if fused_qkv:
                self.add_module(proj_names[0], nn.Linear(embed_dims, 3 * embed_dims,
                                                         bias=qkv_bias))
            else:
                for name in proj_names[:3]:
                    self.add_module(name, nn.Linear(embed_dims, embed_dims, bias=qkv_bias))
            self.add_module(proj_names[-1], nn.Linear(embed_dims, embed_dims))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def _init_torch_layout(self, embed_dims: int, qkv_bias: bool) -> None:
        """``nn.MultiheadAttention``'s parameters, registration order and initialisation."""
        name = self.proj_names[0]
        weight = nn.Parameter(torch.empty(3 * embed_dims, embed_dims))
        bias = nn.Parameter(torch.empty(3 * embed_dims)) if qkv_bias else None
        self.register_parameter(f'{name}_weight', weight)
        self.register_parameter(f'{name}_bias', bias)
        out = nn.Linear(embed_dims, embed_dims)  # its default init draws first, as in torch
        self.add_module(self.proj_names[-1], out)
        nn.init.xavier_uniform_(weight)
        if bias is not None:
            nn.init.zeros_(bias)
        nn.init.zeros_(out.bias)

    def _qkv(self, x: Tensor) -> Tensor:
        """The fused projection ``(B, N, C) -> (B, N, 3C)``."""
        name = self.proj_names[0]
        if self.torch_layout:
            return F.linear(x, getattr(self, f'{name}_weight'), getattr(self, f'{name}_bias'))
        return getattr(self, name)(x)

    def qkv_heads(self, query: Tensor,
                  memory: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Projected ``q (B, heads, Q, d)``, ``k, v (B, heads, N, d)``."""
        names = self.proj_names
        if self.fused_qkv:
            if memory is not None:
                raise ValueError('MultiheadAttention: a fused qkv projection is for '
                                 'self-attention; memory must be None')
            b, n, c = query.shape
            qkv = self._qkv(query).view(b, n, 3, self.num_heads, c // self.num_heads)
            return qkv.permute(2, 0, 3, 1, 4).unbind(0)
        memory = query if memory is None else memory
        return tuple(
            split_heads(getattr(self, name)(x), self.num_heads)
            for name, x in zip(names[:3], (query, memory, memory)))

    def forward(self, query: Tensor, memory: Optional[Tensor] = None,
                bias: Optional[Tensor] = None,
                return_logits: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        q, k, v = self.qkv_heads(query, memory)
        logits = None
        if return_logits or (self.training and self.attn_drop.p > 0):
            logits = (q @ k.transpose(-2, -1)) * self.scale
            if bias is not None:
                logits = logits + bias
            out = self.attn_drop(logits.softmax(-1)) @ v
        elif self.fast_path:
            out = sdpa(q, k, v, bias)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = self.proj_drop(getattr(self, self.proj_names[-1])(merge_heads(out)))
        return (out, logits) if return_logits else out
