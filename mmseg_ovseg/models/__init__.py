from . import backbones, decode_heads, language, losses, necks, segmentors  # noqa: F401
