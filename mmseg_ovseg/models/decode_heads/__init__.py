from .atm_head import ATMHead  # noqa: F401
from .identity_head import IdentityHead  # noqa: F401
from .patch_text_head import PatchTextHead  # noqa: F401
from .restr_decoder import ReSTRCoarseToFineDecoder  # noqa: F401
from .restr_fusion import ReSTRFusionEncoder  # noqa: F401
from .san_head import SANHead  # noqa: F401
from .zegclip_head import ZegCLIPHead  # noqa: F401
