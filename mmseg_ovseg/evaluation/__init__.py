from .referring_metric import ReferringIoUMetric  # noqa: F401
from .zero_shot_metric import ZeroShotIoUMetric  # noqa: F401
