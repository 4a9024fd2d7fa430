"""ZegCLIP's non-mutually-exclusive loss (NEL): sigmoid focal + dice on per-class masks.

`ZegCLIP <https://arxiv.org/abs/2212.03588>`_, Sec. 3.4 "Non-mutually Exclusive Loss": every
class gets an independent sigmoid score per pixel (no softmax across classes), trained with a
focal loss over all classes and a dice loss. The official criterion (``SegPlusCriterion``)
fixes the reduction, reproduced here:

- the label map ``(B, H, W)`` becomes binary masks ``(B, C, H, W)``; pixels equal to
  ``ignore_index`` (ignored regions, unseen classes of inductive training, padding) are a
  negative for *every* class: they are not excluded from the focal term;
- focal: mean over pixels per (image, class), summed over all ``B * C`` masks;
- dice (+1 smoothing): only for the classes present in each image;
- both divided by ``num_masks``: the number of (image, present class) pairs in the batch,
  averaged over distributed ranks and clamped at 1.

The two terms are separate loss modules (``loss_focal``, ``loss_dice``) so that a decode head
lists them in ``loss_decode`` and mmseg's ``BaseDecodeHead.loss_by_feat`` computes them; the
paper's final weights are focal 100, dice 1 (the author in ZegCLIP issue #7).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.dist import all_reduce, get_world_size
from mmseg.registry import MODELS
from torch import Tensor

from .focal_loss import sigmoid_focal_loss


def label_to_masks(pred: Tensor, target: Tensor,
                   ignore_index: Optional[int] = 255) -> Tuple[Tensor, Tensor, Tensor]:
    """Binary per-class masks of a label map and which classes each image contains.

    Args:
        pred: ``(B, C, H, W)`` logits (only the class count and shape are used).
        target: ``(B, H, W)`` integer labels in ``[0, C)`` or ``ignore_index``.
        ignore_index: label of pixels that are negatives for every class.

    Returns:
        masks ``(B, C, H*W)`` float, present ``(B, C)`` bool, and ``num_masks``: the number of
        present (image, class) pairs, averaged over ranks and at least 1 (a float tensor).
    """
    if pred.dim() != 4 or target.dim() != 3 or pred.shape[0] != target.shape[0] \
            or pred.shape[2:] != target.shape[1:]:
        raise ValueError(f'expected logits (B, C, H, W) and labels (B, H, W) of the same size, '
                         f'got {tuple(pred.shape)} and {tuple(target.shape)}')
    b, c = pred.shape[:2]
    target = target.long().flatten(1)
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(
        target, dtype=torch.bool)
    bad = valid & ((target < 0) | (target >= c))
    if bad.any():
        values = torch.unique(target[bad]).tolist()[:10]
        raise ValueError(f'labels {values} are outside [0, {c}) and are not ignore_index='
                         f'{ignore_index}; unseen classes must be remapped (ZeroShotLabelMapping)'
                         ' or pseudo-labelled before the loss')
    masks = pred.new_zeros(b, c, target.shape[1])
    # scatter_ writes 1 at (b, label, pixel); ignored pixels point at class 0 with value 0.
    masks.scatter_(1, torch.where(valid, target, 0).unsqueeze(1),
                   valid.unsqueeze(1).to(pred.dtype))
    present = masks.sum(-1) > 0
    num_masks = present.sum().to(pred.dtype)
    if get_world_size() > 1:
        all_reduce(num_masks, op='mean')
    return masks, present, num_masks.clamp(min=1)


class _MaskLoss(nn.Module):
    """Common interface of the two NEL terms (mmseg ``loss_decode`` call convention)."""

    def __init__(self, loss_weight: float, loss_name: str):
        super().__init__()
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = 255, **kwargs) -> Tensor:
        """Loss of ``(B, C, H, W)`` logits against ``(B, H, W)`` labels (a scalar)."""
        if weight is not None:
            raise NotImplementedError(f'{type(self).__name__} does not support pixel weights '
                                      '(a decode-head sampler)')
        masks, present, num_masks = label_to_masks(pred, target, ignore_index)
        return self.loss_weight * self.reduce(pred.flatten(2).float(), masks.float(),
                                              present, num_masks)

    def reduce(self, pred: Tensor, masks: Tensor, present: Tensor, num_masks: Tensor) -> Tensor:
        raise NotImplementedError


@MODELS.register_module()
class NonExclusiveFocalLoss(_MaskLoss):
    """Sigmoid focal loss over all classes and all pixels, per-mask mean / ``num_masks``.

    Args:
        alpha (float): focal alpha. Default: 0.25.
        gamma (float): focal gamma. Default: 2.0.
        loss_weight (float): ZegCLIP's final setting is 100. Default: 100.0.
        loss_name (str): Default: 'loss_focal'.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, loss_weight: float = 100.0,
                 loss_name: str = 'loss_focal'):
        super().__init__(loss_weight, loss_name)
        self.alpha = alpha
        self.gamma = gamma

    def reduce(self, pred, masks, present, num_masks):
        loss = sigmoid_focal_loss(pred, masks, self.alpha, self.gamma)  # (B, C, HW)
        return loss.mean(-1).sum() / num_masks


@MODELS.register_module()
class NonExclusiveDiceLoss(_MaskLoss):
    """Dice loss ``1 - (2|P.G| + 1) / (|P| + |G| + 1)`` of the classes present per image.

    Args:
        loss_weight (float): Default: 1.0.
        loss_name (str): Default: 'loss_dice'.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss_dice'):
        super().__init__(loss_weight, loss_name)

    def reduce(self, pred, masks, present, num_masks):
        prob = pred.sigmoid()
        dice = 1 - (2 * (prob * masks).sum(-1) + 1) / (prob.sum(-1) + masks.sum(-1) + 1)
        return (dice * present).sum() / num_masks
