"""SegViT's ATM loss: mask classification with a fixed query-to-class assignment.

`SegViT <https://arxiv.org/abs/2210.05844>`_, method, "Loss function":
``L = L_cls + lambda_focal L_focal + lambda_dice L_dice``. The decoder has one class query per
class, so there is **no Hungarian matching**: query ``i`` is supervised by class ``i``.

For each image, the classes present in the label map (``ignore_index`` excluded) give the
targets; the official criterion fixes the rest, reproduced here:

- classification: cross-entropy over all ``C`` queries (``C+1`` outputs); the query of a present
  class targets its class, every other query targets "no object" (index ``C``), whose class
  weight is ``no_object_weight`` (0.1); weighted mean (divided by the summed weights);
- masks, only for present classes: the mask logits are upsampled (bilinear) to the label size;
  sigmoid focal loss (alpha 0.25, gamma 2) averaged over pixels per mask, and dice
  ``1 - (2|P.G| + 1) / (|P| + |G| + 1)`` per mask, both summed over masks and divided by
  ``num_masks`` (present (image, class) pairs of the batch, averaged over ranks, >= 1);
- weights: class 1, focal 20, dice 1, identical for every deep-supervised output (the head
  calls the loss once per output).

Ignored pixels are negatives of every class mask in the official code (``exclude_ignored=
False``); ``exclude_ignored=True`` drops them from the mask terms instead.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .focal_loss import sigmoid_focal_loss
from .mask_cls_utils import average_num_masks, no_object_cross_entropy, zero_loss


@MODELS.register_module()
class ATMLoss(nn.Module):
    """Matching-free mask-classification loss of SegViT.

    Args:
        loss_cls_weight (float): weight of the class cross-entropy. Default 1.
        loss_mask_weight (float): weight of the sigmoid focal mask loss. Default 20.
        loss_dice (dict): mmseg loss on mask logits vs. binary targets, averaged over
            ``num_masks`` (mmseg ``DiceLoss``: naive dice, eps 1, weight 1).
        no_object_weight (float): class weight of "no object". Default 0.1.
        focal_alpha (float), focal_gamma (float): focal parameters. Default 0.25, 2.
        exclude_ignored (bool): leave ``ignore_index`` pixels out of the mask terms
            (official: False, they are negatives). Default False.
    """

    def __init__(self,
                 loss_cls_weight: float = 1.0,
                 loss_mask_weight: float = 20.0,
                 loss_dice: dict = dict(
                     type='DiceLoss', use_sigmoid=True, activate=True, naive_dice=True, eps=1.0,
                     ignore_index=None, loss_weight=1.0, loss_name='loss_dice'),
                 no_object_weight: float = 0.1,
                 focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0,
                 exclude_ignored: bool = False):
        super().__init__()
        self.loss_cls_weight = loss_cls_weight
        self.loss_mask_weight = loss_mask_weight
        self.loss_dice = MODELS.build(loss_dice)
        self.no_object_weight = no_object_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.exclude_ignored = exclude_ignored

    @property
    def loss_name(self) -> str:
        # BaseDecodeHead inspects loss names; this module returns several keys.
        return 'loss_atm'

    def forward(self, cls_logits: Tensor, mask_logits: Tensor, seg_label: Tensor,
                ignore_index: Optional[int] = 255) -> Dict[str, Tensor]:
        """Losses of one decoder output.

        Args:
            cls_logits (Tensor): (B, C, C+1) class logits of the C class queries.
            mask_logits (Tensor): (B, C, h, w) mask logits at any resolution.
            seg_label (Tensor): (B, H, W) labels in ``[0, C)`` or ``ignore_index``.
            ignore_index (int | None): label of ignored pixels.

        Returns:
            dict[str, Tensor]: ``loss_cls``, ``loss_mask`` (focal), ``loss_dice``.
        """
        seg_label = seg_label.long()
        valid = self._check_inputs(cls_logits, mask_logits, seg_label, ignore_index)
        num_classes = cls_logits.shape[1]
        cls_logits, mask_logits = cls_logits.float(), mask_logits.float()
        flat, valid_flat = seg_label.flatten(1), valid.flatten(1)
        present = self.present_classes(flat, valid_flat, num_classes)  # (B, C)

        # Classification: present class -> itself, absent -> no object.
        labels = torch.where(present, torch.arange(num_classes, device=cls_logits.device),
                             num_classes)
        loss_cls = self.loss_cls_weight * no_object_cross_entropy(cls_logits, labels,
                                                                  self.no_object_weight)
        num_masks = average_num_masks(present.sum(), cls_logits.device)
        if not present.any():
            zero = zero_loss(mask_logits)
            return dict(loss_cls=loss_cls, loss_mask=zero,
                        **{self.loss_dice.loss_name: zero.clone()})
        loss_mask, loss_dice = self.mask_losses(mask_logits, flat, valid_flat, present,
                                                seg_label.shape[-2:], num_masks)
        return {'loss_cls': loss_cls, 'loss_mask': loss_mask,
                self.loss_dice.loss_name: loss_dice}

    @staticmethod
    def _check_inputs(cls_logits: Tensor, mask_logits: Tensor, seg_label: Tensor,
                      ignore_index: Optional[int]) -> Tensor:
        """Shape and label checks; returns the (B, H, W) mask of non-ignored pixels."""
        if cls_logits.dim() != 3 or mask_logits.dim() != 4 or seg_label.dim() != 3:
            raise ValueError(f'expected (B, C, C+1), (B, C, h, w) and (B, H, W); got '
                             f'{tuple(cls_logits.shape)}, {tuple(mask_logits.shape)}, '
                             f'{tuple(seg_label.shape)}')
        b, q, k1 = cls_logits.shape
        if q != k1 - 1 or mask_logits.shape[:2] != (b, q) or seg_label.shape[0] != b:
            raise ValueError(f'ATMLoss needs one query per class: got cls {tuple(cls_logits.shape)}'
                             f', masks {tuple(mask_logits.shape)}, labels '
                             f'{tuple(seg_label.shape)}')
        valid = seg_label != ignore_index if ignore_index is not None else \
            torch.ones_like(seg_label, dtype=torch.bool)
        bad = valid & ((seg_label < 0) | (seg_label >= q))
        if bad.any():
            raise ValueError(f'labels {torch.unique(seg_label[bad]).tolist()[:10]} are outside '
                             f'[0, {q}) and are not ignore_index={ignore_index}')
        return valid

    @staticmethod
    def present_classes(flat: Tensor, valid_flat: Tensor, num_classes: int) -> Tensor:
        """(B, C) classes present in the (B, H*W) labels; ignored pixels are not counted."""
        present = flat.new_zeros(flat.shape[0], num_classes + 1, dtype=torch.bool)
        # ignored pixels go to the extra column C, dropped below
        present.scatter_(1, torch.where(valid_flat, flat, num_classes), True)
        return present[:, :num_classes]

    def mask_losses(self, mask_logits: Tensor, flat: Tensor, valid_flat: Tensor,
                    present: Tensor, size: Tuple[int, int],
                    num_masks: float) -> Tuple[Tensor, Tensor]:
        """Focal and dice losses of the present classes' masks, upsampled to the (H, W) label
        ``size``; ``flat``/``valid_flat`` are the (B, H*W) labels and their validity."""
        bi, ci = present.nonzero(as_tuple=True)
        pred = mask_logits[bi, ci]  # (M, h, w)
        if pred.shape[-2:] != size:
            pred = F.interpolate(pred[:, None], size=size, mode='bilinear',
                                 align_corners=False)[:, 0]
        pred = pred.flatten(1)  # (M, H*W)
        # Binary targets of the present masks only: pixel of class c -> 1, ignored -> 0.
        gt = ((flat[bi] == ci[:, None]) & valid_flat[bi]).to(pred.dtype)
        focal = sigmoid_focal_loss(pred, gt, self.focal_alpha, self.focal_gamma)
        if self.exclude_ignored:
            keep = valid_flat[bi].to(pred.dtype)
            focal = (focal * keep).sum(-1) / keep.sum(-1).clamp(min=1)
            # Dice on valid pixels only: zero the prediction where the label is ignored.
            pred = pred.masked_fill(~valid_flat[bi], -1e4)
        else:
            focal = focal.mean(-1)
        loss_mask = self.loss_mask_weight * focal.sum() / num_masks
        return loss_mask, self.loss_dice(pred, gt, avg_factor=num_masks)
