"""Hungarian-matched mask-classification loss.

MaskFormer (Cheng et al., 2021, Sec. 3.2) casts semantic segmentation as predicting a set of
(class, binary mask) pairs; each prediction is matched one-to-one to a ground-truth class
mask by the Hungarian algorithm, unmatched predictions are pushed to the extra "no object"
class. Mask2Former (Sec. 3.2.3) computes mask costs and losses on sampled points. SAN
(Xu et al., 2023, Sec. 3.4 / 4.1) uses exactly this loss: class 2.0, mask BCE 5.0, dice 5.0
on 12544 points, no-object weight 0.1.

The module is head-agnostic: any head that outputs class logits ``(B, Q, K+1)`` and mask logits
``(B, Q, h, w)`` (SAN, SegViT-style, MaskFormer-style) can use it. ``K`` is read from the logits
at run time, so the open vocabulary can change between calls.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from mmengine.structures import InstanceData
from mmseg.registry import MODELS, TASK_UTILS
from torch import Tensor

from .mask_cls_utils import average_num_masks, no_object_cross_entropy, zero_loss
from .point_sampling import point_sample, sample_uncertain_points


def _current_iter() -> str:
    """The runner's current iteration (1-based, as logged), or '?' outside a runner."""
    from mmengine.logging import MessageHub
    try:
        return str(MessageHub.get_current_instance().get_info('iter') + 1)
    except Exception:  # no runner, or no iteration recorded yet
        return '?'


def _default_assigner() -> dict:
    # Mask2Former/SAN matching costs; mmseg's assigner and match costs implement them exactly
    # (DiceCost with eps=1 is the "+1 smoothed" dice of the official code).
    return dict(
        type='HungarianAssigner',
        match_costs=[
            dict(type='ClassificationCost', weight=2.0),
            dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
            dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0),
        ])


@MODELS.register_module()
class MaskClassificationLoss(nn.Module):
    """Set loss of mask classification with Hungarian matching on sampled points.

    Args:
        num_points (int): points per mask, for matching (uniform, shared by all masks of an
            image) and for the mask losses (importance sampled). Default 12544 (112^2).
        oversample_ratio (float): candidate oversampling of importance sampling. Default 3.
        importance_sample_ratio (float): share of uncertain points. Default 0.75.
        loss_cls_weight (float): weight of the classification cross-entropy. Default 2.
        no_object_weight (float): class weight of the "no object" class. Default 0.1.
        loss_cls_name (str): key of the classification loss. Default 'loss_cls_ce'.
        loss_mask (dict): mmseg loss on point logits vs. binary targets, averaged over
            ``num_masks * num_points`` (sigmoid BCE by default, weight 5).
        loss_dice (dict): mmseg loss averaged over ``num_masks`` (naive dice, eps 1, weight 5).
        assigner (dict): a ``TASK_UTILS`` assigner taking ``scores``/``masks`` predictions and
            ``labels``/``masks`` targets (mmseg's ``HungarianAssigner`` by default).
    """

    def __init__(self,
                 num_points: int = 12544,
                 oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75,
                 loss_cls_weight: float = 2.0,
                 no_object_weight: float = 0.1,
                 loss_cls_name: str = 'loss_cls_ce',
                 loss_mask: dict = dict(
                     type='CrossEntropyLoss', use_sigmoid=True, loss_weight=5.0,
                     loss_name='loss_mask_ce'),
                 loss_dice: dict = dict(
                     type='DiceLoss', use_sigmoid=True, activate=True, naive_dice=True, eps=1.0,
                     ignore_index=None, loss_weight=5.0, loss_name='loss_mask_dice'),
                 assigner: dict = None):
        super().__init__()
        if num_points <= 0:
            raise ValueError(f'num_points must be positive, got {num_points}')
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.loss_cls_weight = loss_cls_weight
        self.no_object_weight = no_object_weight
        self.loss_cls_name = loss_cls_name
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)
        self.assigner = TASK_UTILS.build(assigner or _default_assigner())

    @property
    def loss_name(self) -> str:
        # BaseDecodeHead inspects loss names; this module returns several keys.
        return 'loss_mask_classification'

    @torch.no_grad()
    def match(self, cls_logits: Tensor, mask_logits: Tensor,
              gt_instances: InstanceData) -> Tuple[Tensor, Tensor]:
        """Hungarian matching for one image.

        Args:
            cls_logits (Tensor): (Q, K+1).
            mask_logits (Tensor): (Q, h, w).
            gt_instances (InstanceData): ``labels`` (G,), ``masks`` (G, H, W).

        Returns:
            tuple[Tensor, Tensor]: matched query indices and gt indices, each (min(Q, G),).
        """
        labels, masks = gt_instances.labels, gt_instances.masks
        # scipy's assignment fails on NaN costs with "matrix contains invalid numeric
        # entries", which names neither the cause nor the iteration.
        for name, value in (('class logits', cls_logits), ('mask logits', mask_logits)):
            if not torch.isfinite(value).all():
                raise FloatingPointError(
                    f'non-finite {name} (NaN/inf) reached the Hungarian matcher at '
                    f'iteration {_current_iter()}: training diverged (learning rate too high?)')
        if len(labels) == 0:
            empty = labels.new_zeros((0, ), dtype=torch.long)
            return empty, empty
        # One set of uniform points shared by every prediction and target of the image.
        coords = torch.rand(1, self.num_points, 2, device=mask_logits.device)
        pred_points = point_sample(mask_logits[:, None].float(),
                                   coords.expand(mask_logits.shape[0], -1, -1))[:, 0]
        gt_points = point_sample(masks[:, None].float(), coords.expand(len(labels), -1, -1))[:, 0]
        query_idx, gt_idx = self.assigner.assign(
            pred_instances=InstanceData(scores=cls_logits.float(), masks=pred_points),
            gt_instances=InstanceData(labels=labels, masks=gt_points))
        return query_idx.long(), gt_idx.long()

    def forward(self, cls_logits: Tensor, mask_logits: Tensor,
                batch_gt_instances: List[InstanceData]) -> Dict[str, Tensor]:
        """Match and compute the losses of one decoder output.

        Args:
            cls_logits (Tensor): (B, Q, K+1) class logits, last class = no object.
            mask_logits (Tensor): (B, Q, h, w) mask logits at any resolution.
            batch_gt_instances (list[InstanceData]): per image ``labels`` (G,) in ``[0, K)``
                and binary ``masks`` (G, H, W) at any resolution.

        Returns:
            dict[str, Tensor]: classification, mask and dice losses.
        """
        self._check_inputs(cls_logits, mask_logits, batch_gt_instances)
        cls_logits, mask_logits = cls_logits.float(), mask_logits.float()
        labels, pred_masks, gt_masks = self.get_targets(cls_logits, mask_logits,
                                                        batch_gt_instances)
        # Weighted mean over all queries (divides by the summed weights), as the paper's code.
        losses = {self.loss_cls_name: self.loss_cls_weight * no_object_cross_entropy(
            cls_logits, labels, self.no_object_weight)}
        num_masks = average_num_masks(sum(len(gt.labels) for gt in batch_gt_instances),
                                      cls_logits.device)
        if pred_masks.shape[0] == 0:
            zero = zero_loss(mask_logits)
            losses.update({self.loss_mask.loss_name: zero,
                           self.loss_dice.loss_name: zero.clone()})
        else:
            losses.update(self.mask_losses(pred_masks, gt_masks, num_masks))
        return losses

    @staticmethod
    def _check_inputs(cls_logits: Tensor, mask_logits: Tensor,
                      batch_gt_instances: List[InstanceData]):
        if cls_logits.dim() != 3 or mask_logits.dim() != 4 or \
                cls_logits.shape[:2] != mask_logits.shape[:2]:
            raise ValueError(f'expected cls_logits (B, Q, K+1) and mask_logits (B, Q, h, w) with '
                             f'equal B, Q; got {tuple(cls_logits.shape)} and '
                             f'{tuple(mask_logits.shape)}')
        if len(batch_gt_instances) != cls_logits.shape[0]:
            raise ValueError(f'{len(batch_gt_instances)} ground truths for a batch of '
                             f'{cls_logits.shape[0]}')
        num_classes = cls_logits.shape[-1] - 1
        for gt in batch_gt_instances:
            if len(gt.labels) and int(gt.labels.max()) >= num_classes:
                raise ValueError(f'ground-truth label {int(gt.labels.max())} out of range for '
                                 f'{num_classes} classes (is the vocabulary the dataset\'s?)')

    def get_targets(self, cls_logits: Tensor, mask_logits: Tensor,
                    batch_gt_instances: List[InstanceData]) -> Tuple[Tensor, Tensor, Tensor]:
        """Hungarian matching of every image.

        Returns:
            tuple[Tensor, Tensor, Tensor]: class targets (B, Q) (unmatched queries: ``K``, no
            object), the matched mask logits (M, h, w) and their gt masks (M, 1, H, W), ``M``
            matched pairs of the batch.
        """
        labels = cls_logits.new_full(cls_logits.shape[:2], cls_logits.shape[-1] - 1,
                                     dtype=torch.long)
        matched_preds, matched_gts = [], []
        for b, gt in enumerate(batch_gt_instances):
            query_idx, gt_idx = self.match(cls_logits[b], mask_logits[b], gt)
            labels[b, query_idx] = gt.labels[gt_idx].long()
            matched_preds.append(mask_logits[b, query_idx])
            matched_gts.append(gt.masks[gt_idx])
        pred_masks = torch.cat(matched_preds)
        return labels, pred_masks, torch.cat(matched_gts)[:, None].to(pred_masks)

    def mask_losses(self, pred_masks: Tensor, gt_masks: Tensor,
                    num_masks: float) -> Dict[str, Tensor]:
        """Mask and dice losses on importance-sampled points of the (M, h, w) matched mask
        logits against their (M, 1, H, W) targets, normalised by ``num_masks``."""
        with torch.no_grad():
            coords = sample_uncertain_points(pred_masks[:, None], self.num_points,
                                             self.oversample_ratio, self.importance_sample_ratio)
            gt_points = point_sample(gt_masks, coords)[:, 0]
        pred_points = point_sample(pred_masks[:, None], coords)[:, 0]
        return {
            self.loss_mask.loss_name: self.loss_mask(
                pred_points, gt_points, avg_factor=num_masks * self.num_points),
            self.loss_dice.loss_name: self.loss_dice(pred_points, gt_points,
                                                     avg_factor=num_masks),
        }
