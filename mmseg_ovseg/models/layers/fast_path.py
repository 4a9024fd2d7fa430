"""CPU inference fast paths behind one switch (as timm's ``use_fused_attn()``).

Model code calls the plain operations here (:meth:`WeightCache.weight`,
:meth:`WeightCache.linear`, :func:`sdpa`) and the inference functions that ask
:func:`use_fast_path` (listed last below); with the fast path on they take, where it applies,
the faster route below, with the same results (float32 within 1e-5, bfloat16 within its
rounding), and otherwise the plain PyTorch op:

- autocast weight cache: under autocast, frozen float32 weights are cast to the low-precision
  dtype once and kept (autocast re-casts weights that do not require grad on every call);
- prepacked float32 linears: in float32 CPU inference, ``F.linear`` goes to MKL's sgemm, which
  ran 1.25-1.6x slower than oneDNN's inner product on a weight reordered once (the op behind
  inductor's CPU weight prepacking; ``docs/benchmarks.md``). The reordered weight is cached;
- QuickGELU folded into those copies (:meth:`WeightCache.mlp`): ``x * sigmoid(a x)`` becomes
  one SiLU on ``a``-scaled copies;
- blocked bfloat16 attention: bfloat16 CPU inference computes attention for blocks of queries
  (two batched GEMMs and one softmax per cache-sized tile) instead of PyTorch's flash kernel,
  whose small per-block GEMMs run narrow heads (SAN's side adapter: 6 heads of width 40; CLIP
  ViT-B: 12 of width 64) at ~90-120 GFLOP/s: 20-30% faster at these shapes;
- row-banded mask-classification inference (``mask_inference.semantic_inference``, SAN's
  Eq. 4 and SegViT): the masks upsampled and multiplied by bands of output rows instead of
  the plain interpolate + einsum over the full ``(Q, H, W)`` masks;
- integer argmax (``segmentors/dense_inference.argmax_classes``, scores known to be >= 0):
  the argmax over classes on the scores' IEEE bit patterns read as integers.

Whatever needs gradients takes the plain ops; so do traced models (FLOP counting, export) and
``torch.compile`` for the linears. Prepacked linears and blocked attention are CPU-only; the
autocast weight cache serves any device.

The switch: the environment variable ``OVSEG_FAST_PATH`` (``0``/``false``/``off`` disables;
read once at import), :func:`set_fast_path`, or the :func:`fast_path` context manager;
:func:`use_fast_path` reads it at every call. Default: on.
"""
import contextlib
import os
from typing import Dict, Hashable, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import Tensor

ENV_VAR = 'OVSEG_FAST_PATH'

# QuickGELU's constant: x * sigmoid(1.702 x).
QUICKGELU_ALPHA = 1.702

# The oneDNN ops behind inductor's CPU weight prepacking (absent in builds without mkldnn).
ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and \
    hasattr(torch.ops.mkldnn, '_linear_pointwise') and \
    hasattr(torch.ops.mkldnn, '_reorder_linear_weight')

# Elements of one query block's score tile in blocked attention: 1M bf16 values = 2 MB (blocks
# of 96 queries for SAN's side adapter, 208 for CLIP ViT-B at 401 tokens). Tiles twice as large
# ran ~2x slower for the side adapter on the 2-core test machine.
_TILE_ELEMS = 1 << 20


def _env_switch() -> bool:
    value = os.environ.get(ENV_VAR, '1').strip().lower()
    if value in ('1', 'true', 'on', 'yes', ''):
        return True
    if value in ('0', 'false', 'off', 'no'):
        return False
    raise ValueError(f'environment variable {ENV_VAR}={value!r}: expected 1/0, true/false, '
                     'on/off or yes/no')


_ENABLED = _env_switch()


def use_fast_path() -> bool:
    """Whether the fast paths of this module are on (see the module docstring)."""
    return _ENABLED


def set_fast_path(enabled: bool) -> None:
    """Turn the fast paths on or off for the whole process."""
    global _ENABLED
    _ENABLED = bool(enabled)


@contextlib.contextmanager
def fast_path(enabled: bool = True) -> Iterator[None]:
    """Context manager: the fast paths on (or off) inside, the previous state restored after."""
    previous = use_fast_path()
    set_fast_path(enabled)
    try:
        yield
    finally:
        set_fast_path(previous)


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class WeightCache:
    """Inference copies of parameters: autocast casts and oneDNN-reordered linear weights.

    A copy is kept per parameter (and scale, rows) and rebuilt when the parameter changes
    (in-place update, ``.to``: its version counter or storage). The cache is a read-only
    mapping ``key -> (parameter state, copy)`` for inspection; :meth:`clear` drops it.

    Args:
        prepack (bool): allow oneDNN-reordered float32 linears. Each costs one float32 copy
            of its weight (+4 bytes per parameter); False keeps ``F.linear`` in float32.
    """

    def __init__(self, prepack: bool = True):
        self.prepack = prepack
        self._entries: Dict[Hashable, Tuple[tuple, object]] = {}

    # read-only mapping interface (tests, memory accounting)
    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def __getitem__(self, key: Hashable):
        return self._entries[key]

    def items(self):
        return self._entries.items()

    def clear(self) -> None:
        """Drop every copy (after loading new weights in place the copies rebuild anyway)."""
        self._entries.clear()

    @staticmethod
    def casts(param: Tensor) -> bool:
        """Whether :meth:`weight` returns a cached low-precision copy of ``param`` now:
        fast path on, autocast on, a float32 parameter that gets no gradient."""
        return use_fast_path() and torch.is_autocast_enabled(param.device.type) and \
            param.dtype == torch.float32 and not _needs_grad(param)

    def packs(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> bool:
        """Whether :meth:`linear` runs on a reordered oneDNN weight now: fast path on,
        float32 CPU inference without autocast, no tracing, no gradient needed."""
        if not (use_fast_path() and self.prepack and ONEDNN_LINEAR) or _tracing():
            return False
        if weight.device.type != 'cpu' or weight.dtype != torch.float32 or \
                x.dtype != torch.float32 or torch.is_autocast_enabled('cpu'):
            return False
        return not _needs_grad(x, weight, bias)  # the oneDNN op has no autograd

    def caches(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> bool:
        """Whether ``linear(x, weight, bias, ...)`` uses a cached copy, so that a ``scale``
        costs nothing at run time."""
        return self.casts(weight) or self.packs(x, weight, bias)

    def weight(self, param: Tensor, scale: float = 1.0) -> Tensor:
        """``scale * param`` as a GEMM should see it: under autocast (fast path on) a cached
        low-precision copy; otherwise the parameter itself (autocast's own cast, gradients
        flow)."""
        if not self.casts(param):
            return param if scale == 1.0 else param * scale
        dtype = torch.get_autocast_dtype(param.device.type)
        state = (param._version, param.data_ptr(), dtype)
        entry = self._entries.get((id(param), scale))
        if entry is None or entry[0] != state:
            entry = (state, (param.detach() * scale).to(dtype))
            self._entries[(id(param), scale)] = entry
        return entry[1]

    def linear(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], scale: float = 1.0,
               bias_scale: float = 1.0, rows: Optional[slice] = None) -> Tensor:
        """``F.linear(x, scale * weight[rows], bias_scale * bias[rows])``.

        In float32 CPU inference (fast path on) the scaled, sliced weight is reordered once
        for oneDNN's inner product and cached; otherwise ``F.linear`` on :meth:`weight`'s
        weights.
        """
        if not self.packs(x, weight, bias):
            w = self.weight(weight, scale)
            b = None if bias is None else self.weight(bias, bias_scale)
            if rows is not None:
                w, b = w[rows], None if b is None else b[rows]
            return F.linear(x, w, b)
        span = None if rows is None else (rows.start, rows.stop)
        key = ('onednn', id(weight), scale, bias_scale, span)
        state = (weight._version, weight.data_ptr(),
                 None if bias is None else (bias._version, bias.data_ptr()))
        entry = self._entries.get(key)
        if entry is None or entry[0] != state:
            w = weight.detach() if rows is None else weight.detach()[rows]
            w = torch.ops.mkldnn._reorder_linear_weight((w * scale).contiguous(), None)
            b = None
            if bias is not None:
                b = (bias.detach() if rows is None else bias.detach()[rows]) * bias_scale
            entry = (state, (w, b))
            self._entries[key] = entry
        w, b = entry[1]
        return torch.ops.mkldnn._linear_pointwise(x, w, b, 'none', [], '')

    def mlp(self, x: Tensor, fc: nn.Linear, act: nn.Module, proj: nn.Linear) -> Tensor:
        """``proj(act(fc(x)))`` through :meth:`linear`.

        With QuickGELU and cached copies of both linears, ``x * sigmoid(a x) = silu(a x) / a``
        is folded into the copies (``fc`` times ``a``, ``proj`` divided by ``a``): one SiLU
        instead of three element-wise ops.
        """
        if isinstance(act, QuickGELU) and self.caches(x, fc.weight, fc.bias) and \
                self.caches(x, proj.weight, proj.bias):
            a = QUICKGELU_ALPHA
            x = F.silu(self.linear(x, fc.weight, fc.bias, a, a))
            return self.linear(x, proj.weight, proj.bias, 1 / a)
        return self.linear(act(self.linear(x, fc.weight, fc.bias)), proj.weight, proj.bias)


def uses_blocked_attention(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether :func:`sdpa` takes the query-blocked path: fast path on, bfloat16 CPU tensors,
    no gradient needed, no tracing."""
    if not use_fast_path() or q.device.type != 'cpu' or q.dtype != torch.bfloat16 or \
            torch.jit.is_tracing():
        return False
    return not _needs_grad(q, k, v)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor,
                      attn_mask: Optional[Tensor] = None,
                      tile_elems: int = _TILE_ELEMS) -> Tensor:
    """Scaled dot-product attention over blocks of queries (no autograd through ``out=``).

    Like any eager attention under autocast, the bfloat16 scores are rounded before the
    (float32-internal) softmax, where the flash kernel keeps them in float32: against float32
    attention on the unrounded inputs, the blocked path errs ~1.6-2.4x as much as the bf16
    flash kernel (both errors come from bf16 rounding; ``tests/test_attention.py``).

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


def sdpa(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask)`` (no dropout, not causal), or
    :func:`blocked_attention` where :func:`uses_blocked_attention` says so.

    Shapes as :func:`blocked_attention`.
    """
    if uses_blocked_attention(q, k, v):
        return blocked_attention(q, k, v, attn_mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
