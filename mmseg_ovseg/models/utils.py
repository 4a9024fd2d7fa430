"""Small helpers shared by several models of the package."""
from typing import List, Tuple

import torch
import torch.nn as nn
from mmengine.model.weight_init import constant_init, trunc_normal_init


def prediction_size(batch_img_metas: List[dict]) -> Tuple[int, int]:
    """``(H, W)`` a decode head's ``predict_by_feat`` should output, by mmseg's rule.

    A slide-inference crop carries its size as a ``torch.Size`` ``img_shape``; otherwise the
    padded batch size (``pad_shape``) when present, else ``img_shape``.
    """
    meta = batch_img_metas[0]
    if isinstance(meta['img_shape'], torch.Size):  # slide inference crop
        size = meta['img_shape']
    elif 'pad_shape' in meta:
        size = meta['pad_shape'][:2]
    else:
        size = meta['img_shape']
    return int(size[0]), int(size[1])


def trunc_normal_linear_init(module: nn.Module, std: float = 0.02) -> None:
    """ViT-style initialisation of every sub-module: truncated-normal ``nn.Linear`` weights
    (``std``) with zero biases, unit ``nn.LayerNorm`` (subclasses included, e.g. the output
    projection of ``nn.MultiheadAttention``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_init(m, std=std, bias=0.0)
        elif isinstance(m, nn.LayerNorm):
            constant_init(m, val=1.0, bias=0.0)
