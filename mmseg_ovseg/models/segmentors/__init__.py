from .denseclip import DenseCLIP  # noqa: F401
from .restr import ReSTR  # noqa: F401
from .san import SAN  # noqa: F401
from .text_encoder_decoder import TextEncoderDecoder  # noqa: F401
from .zegclip import ZegCLIP  # noqa: F401
