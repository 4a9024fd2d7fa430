"""Distributed training without accelerators (``torchrun`` + gloo on CPU).

mmengine 0.10.7 assumes a GPU when ``launcher='pytorch'``: ``init_dist`` calls
``torch.cuda.set_device(LOCAL_RANK)`` and ``Runner.wrap_model`` passes
``device_ids=[LOCAL_RANK]`` to ``DistributedDataParallel``; both fail on a CPU-only machine.
:func:`setup_cpu_distributed` initialises the process group itself (``Runner`` then skips
``init_dist``) and selects :class:`CPUDistributedDataParallel`, which drops ``device_ids``
for a module on CPU. Nothing changes when an accelerator is present.
"""
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

__all__ = ['CPUDistributedDataParallel', 'setup_cpu_distributed', 'has_accelerator']


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` accepting ``device_ids`` for a CPU module (ignored)."""

    def __init__(self, module, **kwargs):
        if next(module.parameters()).device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module=module, **kwargs)


def has_accelerator() -> bool:
    if torch.cuda.is_available():
        return True
    try:
        from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
        return is_npu_available() or is_mlu_available() or is_musa_available()
    except ImportError:
        return False


def setup_cpu_distributed(cfg) -> bool:
    """Prepare ``cfg`` (an mmengine Config) for ``launcher='pytorch'`` on CPU.

    Initialises the default process group from the torchrun environment with the config's
    ``env_cfg.dist_cfg`` (``nccl`` is replaced by ``gloo``, the only CPU backend here) and sets
    ``model_wrapper_cfg`` to :class:`CPUDistributedDataParallel` unless the config has its own.
    Returns True if it did so, False when not needed (other launcher, accelerator present,
    group already initialised).
    """
    if cfg.get('launcher', 'none') != 'pytorch' or has_accelerator() or \
            (dist.is_available() and dist.is_initialized()):
        return False
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(f'--launcher pytorch: environment variable {key} is not set; '
                               'start the script with torchrun (tools/dist_train.sh)')
    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'gloo')
    dist_cfg.pop('init_backend', None)
    if isinstance(dist_cfg.get('timeout'), (int, float)):  # seconds, as mmengine takes it
        dist_cfg['timeout'] = timedelta(seconds=dist_cfg['timeout'])
    if backend != 'gloo':
        print_log(f'env_cfg.dist_cfg.backend={backend!r} needs GPUs; using gloo on CPU',
                  logger='current', level=logging.WARNING)
        backend = 'gloo'
    dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **dist_cfg)
    if cfg.get('model_wrapper_cfg') is None:
        # the same defaults as mmengine's Runner.wrap_model
        cfg.model_wrapper_cfg = dict(
            type='CPUDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    return True
