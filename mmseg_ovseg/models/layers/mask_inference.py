"""Mask-classification inference: class scores from per-query class and mask logits.

``seg[c] = sum_q softmax(cls_q)[c] * sigmoid(up(mask_q))`` over the real classes (the last
class is "no object"), as SAN (Eq. 4) and SegViT (ATM) infer. The masks are upsampled
(bilinear) to the output size before the sigmoid.

The plain form is ``F.interpolate``, sigmoid and one ``einsum``. A CPU fast path
(:func:`~.fast_path.use_fast_path`, eager calls) evaluates the sum in bands of output rows so
that the ``(Q, H, W)`` upsampled masks never exist in full: bilinear upsampling is separable,
``rows = R_y @ M @ R_x^T`` with the interpolation matrices of ``F.interpolate``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .fast_path import _tracing, use_fast_path

# Output rows per band (measured on a 2-core AVX-512 CPU: 32 rows keep each band's upsampled
# masks at ~8 MB for Q = 100 at 640 px width).
_BAND_ROWS = 32
# Score rows are padded to a multiple of this many classes (the GEMM's vector width):
# (pixels, Q) x (Q, C) with C = 171 runs ~1.6x slower than with C = 176 on AVX-512.
_CLASS_ALIGN = 16


def _interp_matrix(size_in: int, size_out: int, like: Tensor,
                   align_corners: bool = False) -> Tensor:
    """``(size_out, size_in)`` weights of 1-D linear interpolation, taken from
    ``F.interpolate`` itself so that the products match its values."""
    eye = torch.eye(size_in, dtype=like.dtype, device=like.device)
    return F.interpolate(eye[None], size=size_out, mode='linear',
                         align_corners=align_corners)[0].t()


def _bands(ry: Tensor, height: int) -> List[Tuple[int, int, int, int]]:
    """Each band of output rows ``[y0, y1)`` and the source rows ``[c0, c1)`` it reads."""
    bands = []
    for y0 in range(0, height, _BAND_ROWS):
        y1 = min(height, y0 + _BAND_ROWS)
        src = ry[y0:y1].any(dim=0).nonzero()
        bands.append((y0, y1, int(src[0]), int(src[-1]) + 1))
    return bands


def semantic_inference(cls_logits: Tensor, mask_logits: Tensor,
                       size: Optional[Sequence[int]] = None,
                       align_corners: bool = False) -> Tensor:
    """``sum_q softmax(cls_q)[:C] * sigmoid(up(mask_q))``.

    With the fast path on, eager calls take the row-banded path (the same values: float32
    within rounding, the class product under autocast in the low dtype); with it off, and
    under tracers (FLOP counting, export: writes into views do not trace, and the class
    product is then counted as the official heads compute it), the plain math.

    Args:
        cls_logits (Tensor): ``(B, Q, C+1)`` class logits, the last one "no object".
        mask_logits (Tensor): ``(B, Q, h, w)`` mask logits.
        size (tuple[int, int], optional): output ``(H, W)``; default ``(h, w)`` (no resize).
        align_corners (bool): of the bilinear upsampling. Default: False.

    Returns:
        Tensor: ``(B, C, H, W)`` non-negative scores (banded: a view of a channels-last
        buffer); float32, or the autocast dtype under autocast (banded, the class product,
        the dominant GEMM, runs in it as any autocast GEMM does; the interpolation and the
        sigmoid stay float32).
    """
    h, w = mask_logits.shape[-2:]
    size = (h, w) if size is None else (int(size[0]), int(size[1]))
    device_type = mask_logits.device.type
    low = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(
        device_type) else None
    with torch.autocast(device_type, enabled=False):
        cls = cls_logits.float().softmax(dim=-1)[..., :-1]  # (B, Q, C)
        if use_fast_path() and not _tracing():
            return _banded_inference(cls, mask_logits.float(), size, align_corners, low)
        masks = mask_logits.float()
        if tuple(size) != (h, w):
            masks = F.interpolate(masks, size=size, mode='bilinear', align_corners=align_corners)
        seg = torch.einsum('bqc,bqhw->bchw', cls, masks.sigmoid())
        return seg if low is None else seg.to(low)


def _banded_inference(cls: Tensor, mask_logits: Tensor, size: Tuple[int, int],
                      align_corners: bool, low: Optional[torch.dtype]) -> Tensor:
    """The eager path of :func:`semantic_inference` on class probabilities ``(B, Q, C)``."""
    b, q, h, w = mask_logits.shape
    height, width = size
    n_cls = cls.shape[-1]
    c_pad = -(-n_cls // _CLASS_ALIGN) * _CLASS_ALIGN
    if c_pad != n_cls:
        cls = F.pad(cls, (0, c_pad - n_cls))
    if low is not None:
        cls = cls.to(low)
    # An unchanged axis is not multiplied by an identity (exact, and no 0 * inf).
    ry = None if height == h else _interp_matrix(h, height, mask_logits, align_corners)
    rx_t = None if width == w else _interp_matrix(w, width, mask_logits,
                                                  align_corners).t()  # (w, W)
    bands = [(y0, min(height, y0 + _BAND_ROWS), y0, min(height, y0 + _BAND_ROWS))
             for y0 in range(0, height, _BAND_ROWS)] if ry is None else _bands(ry, height)
    # Scores are written channels-last: each band's (pixels, C) product lands in one
    # contiguous block, and an argmax over classes reads contiguous memory.
    out = cls.new_empty((b, height, width, c_pad))
    for i in range(b):
        wide = mask_logits[i] if rx_t is None else torch.matmul(mask_logits[i], rx_t)
        for y0, y1, c0, c1 in bands:  # (Q, h, W) -> per band (Q, y1 - y0, W)
            tile = wide[:, y0:y1].sigmoid() if ry is None else torch.matmul(
                ry[y0:y1, c0:c1], wide[:, c0:c1]).sigmoid_()
            tile = tile.reshape(q, -1).t()  # (pixels, Q)
            if low is not None:
                tile = tile.to(low)
            torch.mm(tile, cls[i], out=out[i, y0:y1].view(tile.shape[0], c_pad))
    return out[..., :n_cls].permute(0, 3, 1, 2)
