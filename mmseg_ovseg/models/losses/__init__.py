from .zegclip_loss import NonExclusiveDiceLoss, NonExclusiveFocalLoss  # noqa: F401
