from .atm_loss import ATMLoss  # noqa: F401
from .mask_classification_loss import MaskClassificationLoss  # noqa: F401
from .mask_cls_utils import average_num_masks, no_object_cross_entropy, zero_loss  # noqa: F401
from .point_sampling import point_sample, sample_uncertain_points  # noqa: F401
from .restr_loss import ReSTRLoss, patch_targets  # noqa: F401
from .zegclip_loss import NonExclusiveDiceLoss, NonExclusiveFocalLoss  # noqa: F401
