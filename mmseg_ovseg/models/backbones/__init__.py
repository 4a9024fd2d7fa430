from .clip_resnet import CLIPResNetWithAttention  # noqa: F401
from .clip_vit import CLIPVisionTransformer  # noqa: F401
from .shrunk_vit import ShrunkVisionTransformer  # noqa: F401
from .strict_vit import StrictVisionTransformer  # noqa: F401
