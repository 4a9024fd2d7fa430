"""Point sampling for mask losses (PointRend, Sec. 3.1; Mask2Former, Sec. 3.2.3).

Mask-classification models supervise masks on a few thousand points instead of every pixel:
matching uses points drawn uniformly, the losses use points drawn mostly where the prediction
is uncertain (logits near 0). Coordinates are normalised to ``[0, 1] x [0, 1]`` as ``(x, y)``,
so predictions and targets of different resolutions are sampled at the same places.

Both functions delegate to the installed libraries -- ``mmcv.ops.point_sample`` (a
``F.grid_sample`` wrapper, no compiled kernel) and mmseg's
``get_uncertain_point_coords_with_randomness`` (Mask2Former's sampler) -- and only add input
checks that raise errors naming the shapes (the library functions ``assert``).
"""
from mmcv.ops import point_sample as _mmcv_point_sample
from mmseg.models.utils import get_uncertain_point_coords_with_randomness
from torch import Tensor


def point_sample(inputs: Tensor, coords: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinearly sample ``inputs`` at normalised points (``mmcv.ops.point_sample``).

    Args:
        inputs (Tensor): (N, C, H, W) maps.
        coords (Tensor): (N, P, 2) points in ``[0, 1]``, ``(x, y)`` order; cast to the dtype
            of ``inputs`` (``grid_sample`` needs equal dtypes).
        align_corners (bool): as in ``F.grid_sample``. Default: False (mmcv's default).

    Returns:
        Tensor: (N, C, P) sampled values.
    """
    if inputs.dim() != 4 or coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(f'point_sample expects (N, C, H, W) inputs and (N, P, 2) coords, got '
                         f'{tuple(inputs.shape)} and {tuple(coords.shape)}')
    return _mmcv_point_sample(inputs, coords.to(inputs.dtype), align_corners=align_corners)


def sample_uncertain_points(mask_logits: Tensor, num_points: int, oversample_ratio: float = 3.0,
                            importance_sample_ratio: float = 0.75) -> Tensor:
    """Points biased towards uncertain locations (PointRend's training-time sampling).

    ``num_points * oversample_ratio`` candidates are drawn uniformly; the
    ``importance_sample_ratio`` fraction with logits closest to 0 is kept and the rest of the
    budget is filled with fresh uniform points. Uncertainty is measured on the *sampled*
    logits, not on the coarse grid, so points between a +1 and a -1 cell count as uncertain.
    Computed by mmseg's ``get_uncertain_point_coords_with_randomness`` (in float32: its
    candidates are float32).

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
    if mask_logits.dim() != 4 or mask_logits.shape[1] != 1:
        raise ValueError('sample_uncertain_points expects (N, 1, H, W) class-agnostic mask '
                         f'logits, got {tuple(mask_logits.shape)}')
    # labels are only read for class-specific (C > 1) logits.
    return get_uncertain_point_coords_with_randomness(
        mask_logits.float(), None, num_points, oversample_ratio, importance_sample_ratio)
