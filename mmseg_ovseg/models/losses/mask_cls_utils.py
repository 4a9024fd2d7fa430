"""Pieces shared by the mask-classification losses (MaskFormer's set criterion).

:class:`~.MaskClassificationLoss` (SAN, Hungarian matching) and :class:`~.ATMLoss` (SegViT, one
query per class) differ in how queries get their targets, not in how the targets are scored:

- the class term is a cross-entropy over ``K + 1`` outputs whose last class, "no object", has
  a reduced weight (0.1 in MaskFormer, Mask2Former, SAN and SegViT), averaged with the class
  weights as the denominator (``F.cross_entropy(weight=...)``, MaskFormer's ``empty_weight``);
- the mask terms are divided by the number of target masks of the batch, averaged over ranks
  so that every GPU uses the same normaliser, and at least 1 (Mask2Former's ``num_masks``).
"""
from typing import Union

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_world_size
from torch import Tensor


def no_object_cross_entropy(cls_logits: Tensor, labels: Tensor,
                            no_object_weight: float) -> Tensor:
    """Cross-entropy with a down-weighted "no object" class, weighted mean over queries.

    Args:
        cls_logits (Tensor): (..., K+1) class logits, the last class is "no object".
        labels (Tensor): (...) targets in ``[0, K]`` (``K`` = no object).
        no_object_weight (float): weight of class ``K``; the others weigh 1.

    Returns:
        Tensor: scalar ``sum_i w[y_i] * nll_i / sum_i w[y_i]``.
    """
    if cls_logits.shape[:-1] != labels.shape:
        raise ValueError(f'labels {tuple(labels.shape)} do not match class logits '
                         f'{tuple(cls_logits.shape)} (expected the logits without their last '
                         'dimension)')
    class_weight = cls_logits.new_ones(cls_logits.shape[-1])
    class_weight[-1] = no_object_weight
    return F.cross_entropy(cls_logits.flatten(0, -2), labels.flatten(), weight=class_weight)


def average_num_masks(num_masks: Union[int, Tensor], device: Union[str, torch.device]) -> float:
    """Normaliser of the mask losses: this rank's number of target masks averaged over the
    ranks (an all-reduce when distributed), clamped to at least 1.

    Args:
        num_masks (int | Tensor): target masks of this rank's batch.
        device (str | torch.device): where to reduce (the losses' device, for NCCL).

    Returns:
        float: the normaliser (a host sync, like Mask2Former's ``.item()``).
    """
    # a float32 copy: the all-reduce works in place
    num_masks = torch.tensor(float(num_masks), dtype=torch.float32, device=device)
    if get_world_size() > 1:
        all_reduce(num_masks, op='mean')
    return num_masks.clamp(min=1).item()


def zero_loss(mask_logits: Tensor) -> Tensor:
    """A zero that keeps ``mask_logits`` in the graph, for batches without target masks
    (DDP expects every parameter to receive a gradient)."""
    return mask_logits.sum() * 0
