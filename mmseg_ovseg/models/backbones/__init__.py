from .clip_vit import CLIPVisionTransformer  # noqa: F401
