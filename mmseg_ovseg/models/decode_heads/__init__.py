from .zegclip_head import ZegCLIPHead  # noqa: F401
