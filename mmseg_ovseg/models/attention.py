"""Multi-head attention kernel shared by the CLIP ViT and SAN's side adapter.

:func:`attention` computes ``softmax(q k^T / sqrt(d) + mask) v`` exactly like
``torch.nn.functional.scaled_dot_product_attention`` and calls it, except in one case
measured to be faster otherwise: bfloat16 inference on CPU. There PyTorch's flash kernel runs
the small per-block GEMMs of narrow heads (SAN's side adapter: 1700 tokens x 6 heads of width
40; CLIP ViT-B: 401 tokens x 12 heads of width 64) at ~90-120 GFLOP/s, in bfloat16 as in
float32. Computing the attention for blocks of queries at a time, each block's
``(B*heads, rows, keys)`` score tile sized to stay in cache (~2 MB), with two batched GEMMs and
one softmax per block, is 20-30% faster at these shapes (``docs/benchmarks.md``). Like any
eager attention under autocast, the scores are rounded to bfloat16 before the (float32-internal)
softmax, where the flash kernel keeps them in float32: against float32 attention on the
unrounded inputs, the blocked path errs ~1.6-2.4x as much as the bf16 flash kernel (both errors
come from bf16 rounding; ``tests/test_attention.py``).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

# Elements of one query block's score tile: 1M bf16 values = 2 MB (blocks of 96 queries for
# SAN's side adapter, 208 for CLIP ViT-B at 401 tokens). Tiles twice as large ran ~2x slower
# for the side adapter on the 2-core test machine.
_TILE_ELEMS = 1 << 20


def uses_blocked_attention(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether :func:`attention` takes the query-blocked path for these inputs.

    bfloat16 CPU tensors when no gradient is needed; everything else (float32, GPUs,
    training) goes to ``scaled_dot_product_attention``.
    """
    if q.device.type != 'cpu' or q.dtype != torch.bfloat16 or torch.jit.is_tracing():
        return False
    return not (torch.is_grad_enabled() and
                (q.requires_grad or k.requires_grad or v.requires_grad))


def blocked_attention(q: Tensor, k: Tensor, v: Tensor,
                      attn_mask: Optional[Tensor] = None,
                      tile_elems: int = _TILE_ELEMS) -> Tensor:
    """Scaled dot-product attention over blocks of queries (no autograd through ``out=``).

    Args:
        q (Tensor): ``(B, heads, Nq, d)`` queries.
        k (Tensor): ``(B, heads, Nk, d)`` keys.
        v (Tensor): ``(B, heads, Nk, dv)`` values.
        attn_mask (Tensor, optional): additive float mask broadcastable to
            ``(B, heads, Nq, Nk)``.
        tile_elems (int): score elements per query block.

    Returns:
        Tensor: ``(B, heads, Nq, dv)``, contiguous.
    """
    b, h, nq, d = q.shape
    nk, dv = k.shape[2], v.shape[-1]
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        raise TypeError('blocked_attention takes an additive float mask, not a boolean one')
    q = (q * d**-0.5).reshape(b * h, nq, d)  # the scale folded into the (smaller) queries
    kt = k.transpose(-1, -2).reshape(b * h, d, nk).contiguous()
    v = v.reshape(b * h, nk, dv).contiguous()
    mask = None
    if attn_mask is not None:
        mask = attn_mask.to(q.dtype).expand(b, h, nq, nk).reshape(b * h, nq, nk)
    out = q.new_empty(b * h, nq, dv)
    rows = max(16, tile_elems // (b * h * nk) // 16 * 16)
    for i in range(0, nq, rows):
        scores = torch.bmm(q[:, i:i + rows], kt)
        if mask is not None:
            scores += mask[:, i:i + rows]
        torch.bmm(scores.softmax(dim=-1), v, out=out[:, i:i + rows])
    return out.view(b, h, nq, dv)


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
    """``scaled_dot_product_attention(q, k, v, attn_mask)`` (no dropout, not causal).

    Shapes as :func:`blocked_attention`; see the module docstring for when the blocked path
    is used instead of PyTorch's fused kernels.
    """
    if uses_blocked_attention(q, k, v):
        return blocked_attention(q, k, v, attn_mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
