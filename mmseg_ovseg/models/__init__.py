from . import backbones, decode_heads, losses, necks, segmentors  # noqa: F401
