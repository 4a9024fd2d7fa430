from .zero_shot import ZeroShotLabelMapping  # noqa: F401
from .synthetic import SyntheticShapesDataset, generate_synthetic_dataset  # noqa: F401
from .transforms import LoadWideAnnotations  # noqa: F401
