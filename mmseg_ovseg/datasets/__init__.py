from .zero_shot import ZeroShotLabelMapping  # noqa: F401
