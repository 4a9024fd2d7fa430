"""Small helpers shared by several models of the package."""
from typing import List, Tuple

import torch


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
