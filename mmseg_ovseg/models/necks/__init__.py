from .context_decoder import ContextDecoder  # noqa: F401
from .fpn_adapter import FPNAdapter  # noqa: F401
from .pre_model_prompting import PreModelPrompting  # noqa: F401
from .query_upsampling import QueryUpsampling  # noqa: F401
