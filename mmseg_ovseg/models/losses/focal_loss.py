"""Element-wise sigmoid focal loss (RetinaNet), shared by the mask-classification losses.

`Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, Eq. 5:
``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``, evaluated independently for every element
(every class of every pixel), so classes are not mutually exclusive.

mmseg's own ``FocalLoss`` drops ignored pixels and reduces over pixels; the papers here need
the raw element-wise term to reduce per mask (ZegCLIP, Mask2Former-style criteria), so only
the formula lives here and each loss module chooses its reduction.
"""
import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(pred: Tensor, target: Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss, no reduction.

    Args:
        pred: logits of any shape.
        target: binary targets (0/1, float) of the same shape.
        alpha: weight of positives (``1 - alpha`` for negatives); a negative value disables
            the weighting.
        gamma: focusing exponent; 0 gives plain binary cross-entropy.

    Returns:
        A tensor shaped like ``pred``.
    """
    if pred.shape != target.shape:
        raise ValueError(f'sigmoid_focal_loss: pred {tuple(pred.shape)} and target '
                         f'{tuple(target.shape)} differ in shape')
    target = target.to(pred.dtype)
    ce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
    prob = pred.sigmoid()
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss
