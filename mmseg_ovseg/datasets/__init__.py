from .captions import CaptionDataset, CaptionGenerator  # noqa: F401
from .concept_seg import ConceptSegDataset, generate_concept_dataset  # noqa: F401
from .refcoco import RefCOCODataset  # noqa: F401
from .referit import LoadReferItMask, ReferItDataset  # noqa: F401
from .referring_transforms import LoadReferringAnnotation, PackReferringInputs  # noqa: F401
from .synthetic import SyntheticShapesDataset, generate_synthetic_dataset  # noqa: F401
from .synthetic_referring import generate_referring_dataset  # noqa: F401
from .transforms import LoadWideAnnotations  # noqa: F401
from .zero_shot import ZeroShotLabelMapping  # noqa: F401
