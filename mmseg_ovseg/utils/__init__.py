from .checkpoint import register_safe_globals, safe_globals_for_mmengine
from .dist import CPUDistributedDataParallel, has_accelerator, setup_cpu_distributed
from .io import torch_save_atomic
from .safe_pickle import UnsafePickleError, load_plain_pickle

__all__ = [
    'register_safe_globals', 'safe_globals_for_mmengine', 'CPUDistributedDataParallel',
    'has_accelerator', 'setup_cpu_distributed', 'torch_save_atomic', 'UnsafePickleError',
    'load_plain_pickle'
]
