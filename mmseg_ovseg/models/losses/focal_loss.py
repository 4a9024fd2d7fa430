"""Element-wise sigmoid focal loss (RetinaNet), shared by the mask-classification losses.

`Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, Eq. 5:
``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``, evaluated independently for every element
(every class of every pixel), so classes are not mutually exclusive.

The formula is ``torchvision.ops.sigmoid_focal_loss`` -- the same element-wise term as
ZegCLIP's ``models/losses/criterion.py`` (both copy fvcore's). mmcv's compiled
``sigmoid_focal_loss`` is not used: it has no CPU kernel and takes class indices, not binary
targets. mmseg's ``FocalLoss`` drops ignored pixels and reduces over pixels; the papers here
need the raw element-wise term to reduce per mask (ZegCLIP's per-mask mean / ``num_masks``,
Mask2Former-style criteria), so each loss module chooses its reduction.
"""
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss as _tv_sigmoid_focal_loss


def sigmoid_focal_loss(pred: Tensor, target: Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss, no reduction.

    Args:
        pred: logits of any shape.
        target: binary targets (0/1, float) of the same shape.
        alpha: weight of positives (``1 - alpha`` for negatives), in ``[0, 1]``; a negative
            value disables the weighting.
        gamma: focusing exponent; 0 gives plain binary cross-entropy.

    Returns:
        A tensor shaped like ``pred``.
    """
    if pred.shape != target.shape:
        raise ValueError(f'sigmoid_focal_loss: pred {tuple(pred.shape)} and target '
                         f'{tuple(target.shape)} differ in shape')
    if alpha > 1:
        raise ValueError(f'sigmoid_focal_loss: alpha must be in [0, 1] or negative (no '
                         f'weighting), got {alpha}')
    # torchvision spells "no weighting" as exactly -1.
    return _tv_sigmoid_focal_loss(pred, target.to(pred.dtype), alpha=alpha if alpha >= 0 else -1,
                                  gamma=gamma, reduction='none')
