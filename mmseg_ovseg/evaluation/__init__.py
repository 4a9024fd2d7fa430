from .zero_shot_metric import ZeroShotIoUMetric  # noqa: F401
