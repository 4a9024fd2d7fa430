"""Point sampling for mask losses (PointRend, Sec. 3.1; Mask2Former, Sec. 3.2.3).

Mask-classification models supervise masks on a few thousand points instead of every pixel:
matching uses points drawn uniformly, the losses use points drawn mostly where the prediction
is uncertain (logits near 0). Coordinates are normalised to ``[0, 1] x [0, 1]`` as ``(x, y)``,
so predictions and targets of different resolutions are sampled at the same places.
"""
import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(inputs: Tensor, coords: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinearly sample ``inputs`` at normalised points.

    Args:
        inputs (Tensor): (N, C, H, W) maps.
        coords (Tensor): (N, P, 2) points in ``[0, 1]``, ``(x, y)`` order.
        align_corners (bool): as in ``F.grid_sample``; False matches mmcv's ``point_sample``.

    Returns:
        Tensor: (N, C, P) sampled values.
    """
    if inputs.dim() != 4 or coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(f'point_sample expects (N, C, H, W) inputs and (N, P, 2) coords, got '
                         f'{tuple(inputs.shape)} and {tuple(coords.shape)}')
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(inputs.dtype)  # (N, P, 1, 2) in [-1, 1]
    return F.grid_sample(inputs, grid, align_corners=align_corners).squeeze(3)


def sample_uncertain_points(mask_logits: Tensor, num_points: int, oversample_ratio: float = 3.0,
                            importance_sample_ratio: float = 0.75) -> Tensor:
    """Points biased towards uncertain locations (PointRend's training-time sampling).

    ``num_points * oversample_ratio`` candidates are drawn uniformly; the
    ``importance_sample_ratio`` fraction with logits closest to 0 is kept and the rest of the
    budget is filled with fresh uniform points. Uncertainty is measured on the *sampled*
    logits, not on the coarse grid, so points between a +1 and a -1 cell count as uncertain.

    Args:
        mask_logits (Tensor): (N, 1, H, W) class-agnostic mask logits.
        num_points (int): points per mask.
        oversample_ratio (float): >= 1.
        importance_sample_ratio (float): in [0, 1].

    Returns:
        Tensor: (N, num_points, 2) coordinates in ``[0, 1]``.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError('need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1, got '
                         f'{oversample_ratio} and {importance_sample_ratio}')
    n = mask_logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(n, num_candidates, 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits, candidates)[:, 0].abs()  # (N, num_candidates)
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    coords = torch.gather(candidates, 1, idx[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat(
            [coords, torch.rand(n, num_random, 2, device=mask_logits.device)], dim=1)
    return coords
