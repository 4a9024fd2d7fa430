"""ReSTR's training loss (Kim et al., CVPR 2022, Sec. 3.4): binary cross-entropy on the pixel
logits plus ``alpha = 0.1`` x binary cross-entropy on the patch logits of the fusion encoder,
whose targets are derived from the mask per ``P x P`` patch.
"""
from typing import Dict

import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

PATCH_TARGET_MODES = ('sum', 'fraction')


def patch_targets(gt: Tensor, patch_size: int, mode: str = 'sum', threshold: float = 0.8,
                  ignore_index: int = 255) -> Tensor:
    """Patch-level 0/1 targets ``(B, 1, H // P, W // P)`` from a label map ``(B, H, W)`` or
    ``(B, 1, H, W)`` (1 = object; 0 and ``ignore_index`` count as background).

    - ``mode='sum'`` (official ``Patch_label_gen``): positive when the number of object pixels
      in the patch exceeds ``threshold``; with the official 0.8 that is *any* object pixel.
    - ``mode='fraction'``: positive when object pixels / non-ignored pixels of the patch
      exceed ``threshold`` (the area-scaled variant left commented out in the official code).
    """
    if mode not in PATCH_TARGET_MODES:
        raise ValueError(f'patch_targets: mode must be one of {PATCH_TARGET_MODES}, got '
                         f'{mode!r}')
    if gt.dim() == 3:
        gt = gt[:, None]
    if gt.dim() != 4 or gt.shape[1] != 1:
        raise ValueError(f'patch_targets: gt must be (B, H, W) or (B, 1, H, W), got '
                         f'{tuple(gt.shape)}')
    area = float(patch_size * patch_size)
    fg = F.avg_pool2d((gt == 1).float(), patch_size) * area
    if mode == 'sum':
        return (fg > threshold).float()
    valid = F.avg_pool2d((gt != ignore_index).float(), patch_size) * area
    return (fg > threshold * valid.clamp(min=1)).float()


@MODELS.register_module()
class ReSTRLoss(nn.Module):
    """``loss_pixel = BCE(pixel logits, mask)`` over non-ignored pixels, ``loss_patch =
    alpha * BCE(patch logits, patch targets)`` over all patches.

    Args:
        patch_size (int): ViT patch size ``P`` (16).
        patch_weight (float): ``alpha`` (official ``alpha_loc`` 0.1).
        patch_target_mode (str): ``'sum'`` (official rule, default) or ``'fraction'``; see
            :func:`patch_targets`.
        patch_threshold (float): official ``patch_thres`` 0.8.
        ignore_index (int): label of padding (letterbox) pixels.
        align_corners (bool): of the bilinear resize of the pixel logits to the label size
            when they differ (official: True).
    """

    def __init__(self, patch_size: int = 16, patch_weight: float = 0.1,
                 patch_target_mode: str = 'sum', patch_threshold: float = 0.8,
                 ignore_index: int = 255, align_corners: bool = True):
        super().__init__()
        if patch_target_mode not in PATCH_TARGET_MODES:
            raise ValueError(f'ReSTRLoss: patch_target_mode must be one of '
                             f'{PATCH_TARGET_MODES}, got {patch_target_mode!r}')
        self.patch_size = patch_size
        self.patch_weight = patch_weight
        self.patch_target_mode = patch_target_mode
        self.patch_threshold = patch_threshold
        self.ignore_index = ignore_index
        self.align_corners = align_corners

    def forward(self, pixel_logits: Tensor, patch_logits: Tensor,
                gt: Tensor) -> Dict[str, Tensor]:
        """``pixel_logits (B, 1, H', W')``, ``patch_logits (B, 1, h, w)``, ``gt (B, 1, H, W)``
        long labels (0, 1, ``ignore_index``) -> ``dict(loss_pixel, loss_patch)``."""
        if gt.dim() == 3:
            gt = gt[:, None]
        if pixel_logits.shape[2:] != gt.shape[2:]:
            pixel_logits = F.interpolate(pixel_logits, size=gt.shape[2:], mode='bilinear',
                                         align_corners=self.align_corners)
        valid = gt != self.ignore_index
        target = (gt == 1).to(pixel_logits.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(pixel_logits, target, reduction='none')
        loss_pixel = (per_pixel * valid).sum() / valid.sum().clamp(min=1)
        p_target = patch_targets(gt, self.patch_size, self.patch_target_mode,
                                 self.patch_threshold, self.ignore_index)
        if p_target.shape != patch_logits.shape:
            raise ValueError(f'ReSTRLoss: patch logits {tuple(patch_logits.shape)} do not match '
                             f'the {self.patch_size}x{self.patch_size} patch grid of the labels '
                             f'{tuple(p_target.shape)}')
        loss_patch = F.binary_cross_entropy_with_logits(patch_logits, p_target.to(
            patch_logits.dtype))
        return dict(loss_pixel=loss_pixel, loss_patch=self.patch_weight * loss_patch)
