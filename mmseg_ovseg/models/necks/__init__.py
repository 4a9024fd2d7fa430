from .context_decoder import ContextDecoder  # noqa: F401
