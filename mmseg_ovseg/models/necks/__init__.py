from .query_upsampling import QueryUpsampling  # noqa: F401
from .context_decoder import ContextDecoder  # noqa: F401
