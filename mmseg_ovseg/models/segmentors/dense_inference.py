"""Batched slide windows and label-only postprocessing of :class:`TextEncoderDecoder`.

Functions of the segmentor's inference that do not depend on the text: mmseg's slide windows
run several at a time (:func:`slide_inference`), and the resize to the original image with a
running argmax over chunks of classes, so that the ``(C, H_ori, W_ori)`` score map never
exists (:func:`resized_argmax`, :func:`labels_only`). References are mmseg's
``EncoderDecoder.slide_inference`` and ``BaseSegmentor.postprocess_result``
(``tests/test_slide_inference.py``).
"""
from typing import Callable, List, Sequence, Tuple

import torch
from mmengine.structures import PixelData
from mmseg.models.utils import resize
from mmseg.structures import SegDataSample
from torch import Tensor

from ..layers.fast_path import use_fast_path

# Integer types of the same width as the float types the scores may have.
_SAME_SIZE_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16,
                  torch.float16: torch.int16}

#: Slide windows per forward when ``test_cfg`` has no ``batch_windows``.
DEFAULT_BATCH_WINDOWS = 4
#: Bytes of one class chunk resized to the original size when ``keep_logits=False``.
_RESIZE_CHUNK_BYTES = 128 << 20
#: Rows per in-place division of the slide sums by the window counts (and per band of the
#: running argmax of ``keep_logits=False``).
_DIVIDE_BAND_ROWS = 256


def window_spans(size: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    """``[(start, end), ...]`` of mmseg's slide windows along one axis of length ``size``.

    Starts every ``stride``, the last window is shifted back to end at ``size``, and a crop
    larger than the image is cut to the image (mmseg's ``slide_inference`` rule).
    """
    if crop <= 0 or stride <= 0:
        raise ValueError(f'slide inference needs positive crop_size and stride, got crop '
                         f'{crop}, stride {stride}')
    grids = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(grids):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def _coverage(spans: List[Tuple[int, int]], size: int, like: Tensor) -> Tensor:
    """``(size,)`` number of windows covering each position (float, of ``like``'s dtype)."""
    count = like.new_zeros(size)
    for start, end in spans:
        count[start:end] += 1
    return count


def slide_inference(encode_decode: Callable[[Tensor, List[dict]], Tensor], inputs: Tensor,
                    batch_img_metas: List[dict], test_cfg, out_channels: int) -> Tensor:
    """Sliding-window scores, ``test_cfg.batch_windows`` windows per ``encode_decode`` call.

    The windows, their order and the averaging are mmseg's ``slide_inference`` (each pixel's
    sum is accumulated in window order and divided by its window count), so the result is
    the same up to float rounding of batched kernels.

    Args:
        encode_decode: the segmentor's ``encode_decode`` (crops, metas) -> (N, C, h, w).
        inputs (Tensor): ``(B, 3, H, W)`` images.
        batch_img_metas (list[dict]): one meta dict per image; each window's copy gets
            ``img_shape`` = the window size (a ``torch.Size``, mmseg's mark of a crop).
        test_cfg: ``stride``, ``crop_size`` and optionally ``batch_windows``.
        out_channels (int): ``C``.

    Returns:
        Tensor: ``(B, C, H, W)`` scores, in ``inputs``' dtype.
    """
    h_stride, w_stride = test_cfg.stride
    h_crop, w_crop = test_cfg.crop_size
    batch_windows = test_cfg.get('batch_windows', DEFAULT_BATCH_WINDOWS)
    if not isinstance(batch_windows, int) or batch_windows < 1:
        raise ValueError(f'test_cfg.batch_windows must be a positive int, got '
                         f'{batch_windows!r}')
    batch_size, _, h_img, w_img = inputs.shape
    rows = window_spans(h_img, h_crop, h_stride)
    cols = window_spans(w_img, w_crop, w_stride)
    windows = [(i, y1, y2, x1, x2) for i in range(batch_size) for y1, y2 in rows
               for x1, x2 in cols]
    preds = inputs.new_zeros((batch_size, out_channels, h_img, w_img))
    for start in range(0, len(windows), batch_windows):
        chunk = windows[start:start + batch_windows]
        crops = torch.stack([inputs[i, :, y1:y2, x1:x2] for i, y1, y2, x1, x2 in chunk])
        metas = [dict(batch_img_metas[i], img_shape=crops.shape[2:]) for i, *_ in chunk]
        crop_logits = encode_decode(crops, metas)
        for logits, (i, y1, y2, x1, x2) in zip(crop_logits, chunk):
            preds[i, :, y1:y2, x1:x2] += logits
        del crops, crop_logits
    # Every window spans a row range x a column range of the grid, so a pixel's count is
    # (windows over its row) x (windows over its column); exact small integers.
    count_y = _coverage(rows, h_img, preds)
    count_x = _coverage(cols, w_img, preds)
    for y0 in range(0, h_img, _DIVIDE_BAND_ROWS):
        y1 = min(h_img, y0 + _DIVIDE_BAND_ROWS)
        preds[:, :, y0:y1] /= count_y[y0:y1, None] * count_x[None, :]
    return preds


def argmax_classes(logits: Tensor, nonnegative: bool = False) -> Tensor:
    """``(C, H, W)`` scores -> ``(1, H, W)`` class indices: ``logits.argmax(dim=0)``.

    A CPU fast path (:func:`~mmseg_ovseg.models.layers.fast_path.use_fast_path`): with
    ``nonnegative`` (scores known to be >= 0) the argmax runs on the IEEE bit patterns read
    as integers, about 2x (float32) to 4x (bfloat16) faster on CPU than a float one. For
    non-negative floats the patterns order as the values do, and equal values have equal
    patterns, so ties go to the first class as in the float argmax; the one exception, a
    ``-0.0`` (pattern below every other) tied with ``+0.0``, never occurs in scores that
    are sums of products of non-negative terms. With the switch off: the float argmax.
    """
    int_dtype = _SAME_SIZE_INT.get(logits.dtype) if nonnegative and use_fast_path() else None
    if int_dtype is None:
        return logits.argmax(dim=0, keepdim=True)
    return logits.view(int_dtype).argmax(dim=0, keepdim=True)


def resized_argmax(logits: Tensor, size: Tuple[int, int], flip_dims: Tuple[int, ...] = (),
                   align_corners: bool = False) -> Tensor:
    """``(1, H, W)`` argmax over classes of ``logits (C, h, w)`` flipped and resized to
    ``size`` as mmseg's ``postprocess_result`` does, one chunk of classes at a time.

    Bilinear resizing treats channels independently, so each chunk's scores are those of
    the whole map; the running maximum (by bands of rows, so its temporaries stay small)
    takes a later class only when strictly greater: the first maximal class, as
    ``argmax``. Memory: one ``(c, H, W)`` chunk (~128 MB) plus the running maximum and
    the labels, instead of the ``(C, H, W)`` map.
    """
    num_classes = logits.shape[0]
    step = max(1, _RESIZE_CHUNK_BYTES // (size[0] * size[1] * logits.element_size()))
    best = logits.new_empty((1, ) + tuple(size))
    pred = torch.zeros((1, ) + tuple(size), dtype=torch.long, device=logits.device)
    for c0 in range(0, num_classes, step):
        chunk = logits[c0:c0 + step]
        if flip_dims:
            chunk = chunk.flip(flip_dims)
        chunk = resize(chunk[None], size=size, mode='bilinear',
                       align_corners=align_corners, warning=False)[0]
        for y0 in range(0, size[0], _DIVIDE_BAND_ROWS):
            rows = slice(y0, y0 + _DIVIDE_BAND_ROWS)
            values, labels = chunk[:, rows].max(dim=0, keepdim=True)
            if c0 == 0:
                best[:, rows] = values
                pred[:, rows] = labels
                continue
            better = values > best[:, rows]
            best[:, rows] = torch.where(better, values, best[:, rows])
            pred[:, rows] = torch.where(better, labels + c0, pred[:, rows])
        del chunk
    return pred


def padding(meta: dict) -> List[int]:
    """``[left, right, top, bottom]`` padding of a sample (mmseg's two key names)."""
    return list(meta.get('img_padding_size', meta.get('padding_size', [0] * 4)))


def unchanged(meta: dict, size: Tuple[int, int]) -> bool:
    """Whether mmseg's postprocessing would leave ``size`` scores as they are (no flip, no
    padding, original size)."""
    return (not meta.get('flip', False) and not any(padding(meta))
            and tuple(meta.get('ori_shape', ())) == tuple(size))


def _flip_dims(meta: dict) -> Tuple[int, ...]:
    if not meta.get('flip', False):
        return ()
    direction = meta.get('flip_direction', None)
    if direction not in ('horizontal', 'vertical'):
        raise ValueError(f'flip_direction must be horizontal or vertical, got {direction!r}')
    return (2, ) if direction == 'horizontal' else (1, )


def label_of(logits: Tensor, meta: dict, nonnegative: bool = False,
             align_corners: bool = False) -> Tensor:
    """``(1, H_ori, W_ori)`` labels of one sample's ``(C, h, w)`` padded scores: mmseg's
    unpadding, flip, resize and argmax, without the full-size score map."""
    height, width = logits.shape[-2:]
    left, right, top, bottom = padding(meta)
    logits = logits[:, top:height - bottom, left:width - right]
    flip_dims = _flip_dims(meta)
    ori_shape = tuple(int(x) for x in meta['ori_shape'][:2])
    if ori_shape == tuple(logits.shape[-2:]):
        # a per-pixel argmax commutes with the flip: flip the (1, H, W) labels only
        pred = argmax_classes(logits, nonnegative)
        return pred.flip(flip_dims) if flip_dims else pred
    return resized_argmax(logits, ori_shape, flip_dims, align_corners)


def set_predictions(seg_logits: Tensor, data_samples: Sequence[SegDataSample],
                    metas: Sequence[dict], keep_logits: bool, nonnegative: bool = False,
                    align_corners: bool = False) -> None:
    """Fill each sample's ``pred_sem_seg`` (and, with ``keep_logits``, its unchanged
    ``seg_logits``) from ``seg_logits (B, C, h, w)``."""
    for logits, sample, meta in zip(seg_logits, data_samples, metas):
        if keep_logits:  # unchanged: the scores as they are
            sample.set_data(dict(
                seg_logits=PixelData(data=logits),
                pred_sem_seg=PixelData(data=argmax_classes(logits, nonnegative))))
            continue
        pred = label_of(logits, meta, nonnegative, align_corners)
        sample.set_data(dict(pred_sem_seg=PixelData(data=pred)))
