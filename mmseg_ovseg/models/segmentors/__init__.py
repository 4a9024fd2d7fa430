from .zegclip import ZegCLIP  # noqa: F401
