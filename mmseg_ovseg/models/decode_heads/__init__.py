from .zegclip_head import ZegCLIPHead  # noqa: F401
from .patch_text_head import PatchTextHead  # noqa: F401
