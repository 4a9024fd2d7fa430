from .clip_vit import CLIPVisionTransformer  # noqa: F401
from .clip_resnet import CLIPResNetWithAttention  # noqa: F401
