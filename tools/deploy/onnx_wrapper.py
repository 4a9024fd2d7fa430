"""What ``tools/deploy/export_onnx.py`` traces: a segmentor with its class embeddings as a
constant, and the plain-op replacements of the steps that do not trace into ONNX (SAN's
banded Eq. 4 and its adaptive pooling of the attention bias)."""
from contextlib import contextmanager
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def san_scores(mask_logits: Tensor, cls_logits: Tensor, size: Tuple[int, int]) -> Tensor:
    """SAN's Eq. 4 in plain ops: ``sum_q softmax(cls)[q, :C] * sigmoid(upsampled mask_q)``.

    ``SANHead.predict_by_feat`` computes the same scores by bands of rows into a
    channels-last buffer (``torch.mm(..., out=...)``, separable interpolation matrices) to
    save memory; in-place writes into views do not trace into ONNX, so the exported graph
    upsamples the masks with ``F.interpolate`` (bilinear, ``align_corners=False``, as the
    head's interpolation matrices) and contracts the queries with one ``einsum``.

    Args:
        mask_logits (Tensor): (B, Q, h, w) mask logits of the last side-adapter block.
        cls_logits (Tensor): (B, Q, C + 1) class logits (last column: no object).
        size (tuple[int, int]): output (H, W).

    Returns:
        Tensor: (B, C, H, W) non-negative scores.
    """
    masks = F.interpolate(mask_logits, size=size, mode='bilinear', align_corners=False)
    cls = cls_logits.softmax(dim=-1)[..., :-1]
    return torch.einsum('bqc,bqhw->bchw', cls, masks.sigmoid())


def adaptive_max_pool2d_static(x: Tensor, out_hw: Tuple[int, int]) -> Tensor:
    """``F.adaptive_max_pool2d(x, out_hw)`` from static slices, for the ONNX exporter.

    The TorchScript exporter only converts ``adaptive_max_pool2d`` when the input size is
    known in the graph, which it is not after SAN's reshape of the attention bias. When the
    input size is a multiple of ``out_hw`` adaptive pooling is ``max_pool2d`` with kernel =
    stride = the ratio; otherwise each output cell is the max over PyTorch's adaptive window
    ``[floor(i * h / h'), ceil((i + 1) * h / h'))``, written as constant slices.

    Args:
        x (Tensor): (N, K, h, w).
        out_hw (tuple[int, int]): (h', w').

    Returns:
        Tensor: (N, K, h', w').
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if h % oh == 0 and w % ow == 0:
        return F.max_pool2d(x, kernel_size=(h // oh, w // ow))

    def spans(size, out):
        return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]

    rows = [
        torch.stack([x[..., y0:y1, x0:x1].amax(dim=(-2, -1)) for x0, x1 in spans(w, ow)], -1)
        for y0, y1 in spans(h, oh)
    ]
    return torch.stack(rows, dim=-2)


@contextmanager
def _static_bias_pooling(head: nn.Module):
    """Within the block, ``head.pool_bias`` (SAN) pools with static slices (see
    :func:`adaptive_max_pool2d_static`); the class method is restored afterwards."""

    def pool_bias(attn_bias: Tensor, clip_hw: Tuple[int, int]) -> Tensor:
        b, n, q, h, w = attn_bias.shape
        if (int(h), int(w)) != tuple(int(s) for s in clip_hw):
            attn_bias = adaptive_max_pool2d_static(attn_bias.reshape(b, n * q, h, w), clip_hw)
        return attn_bias.reshape(b, n, q, -1)

    head.pool_bias = pool_bias  # instance attribute: shadows SANHead.pool_bias
    try:
        yield
    finally:
        del head.pool_bias


class ExportableSegmentor(nn.Module):
    """``image (1, 3, H, W)`` RGB 0..255 -> ``seg_logits (1, C, H, W)`` with constant classes.

    Wraps a segmentor in eval mode; ``class_embeds`` (a buffer, so it becomes an ONNX
    initializer) replace the text encoder's output: the segmentor's per-inference text memo
    is filled with them before the image path runs, so the text tower is never called.

    Args:
        model: a built ``TextEncoderDecoder`` / ``SAN`` / ``ZegCLIP`` (eval mode).
        class_embeds (Tensor): (C, D) text embeddings of the vocabulary.
        mean, std (Sequence[float]): the data preprocessor's per-channel RGB statistics.
    """

    def __init__(self, model: nn.Module, class_embeds: Tensor, mean: Sequence[float],
                 std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer('class_embeds', class_embeds.detach().float().clone())
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        model = self.model
        inputs = (image - self.mean) / self.std
        size = (int(inputs.shape[2]), int(inputs.shape[3]))
        metas = [dict(img_shape=size, pad_shape=size, ori_shape=size)]
        # Within _text_once the segmentor reads its class embeddings from the memo: filling
        # it first makes them this module's constant buffer.
        with model._text_once():
            model.memo_text('class_embeds', lambda: self.class_embeds)
            if type(model).__name__ == 'SAN':
                feats = model.extract_feat(inputs)
                with _static_bias_pooling(model.decode_head):
                    all_cls, all_masks = model.decode(feats, deep_supervision=False)
                return san_scores(all_masks[-1], all_cls[-1], size)
            return model.encode_decode(inputs, metas)

