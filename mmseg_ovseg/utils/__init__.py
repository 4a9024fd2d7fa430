from .checkpoint import register_safe_globals, safe_globals_for_mmengine

__all__ = ['register_safe_globals', 'safe_globals_for_mmengine']
