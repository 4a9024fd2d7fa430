from .query_upsampling import QueryUpsampling  # noqa: F401
from .context_decoder import ContextDecoder  # noqa: F401
from .fpn_adapter import FPNAdapter  # noqa: F401
