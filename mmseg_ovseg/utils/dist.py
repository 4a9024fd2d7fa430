"""Distributed training without accelerators (``torchrun`` + gloo on CPU).

mmengine 0.10.7 assumes a GPU when ``launcher='pytorch'``: ``init_dist`` calls
``torch.cuda.set_device(LOCAL_RANK)`` and ``Runner.wrap_model`` passes
``device_ids=[LOCAL_RANK]`` to ``DistributedDataParallel``; both fail on a CPU-only machine.
:func:`setup_cpu_distributed` initialises the process group itself (``Runner`` then skips
``init_dist``) and selects :class:`CPUDistributedDataParallel`, which drops ``device_ids``
for a module on CPU. Nothing changes when an accelerator is present.

:func:`exit_with_parent` ends a worker whose launcher (the torchrun agent) has died: torchrun
starts every worker in a session of its own, so nothing else would stop the workers after a
``kill -9`` of the agent.
"""
import logging
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

__all__ = [
    'CPUDistributedDataParallel', 'setup_cpu_distributed', 'has_accelerator', 'check_device',
    'exit_with_parent', 'launched_by_torchrun'
]


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


def check_device(device) -> torch.device:
    """``torch.device(device)``, refusing a device this machine does not have.

    Raises:
        ValueError: an unparsable device string, or a CUDA device without CUDA (or with an
            index beyond ``torch.cuda.device_count()``), each named in the message.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"invalid device {device!r} (expected e.g. 'cpu' or 'cuda:0'): "
                         f'{e}') from None
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            built = 'a torch build without CUDA' if torch.version.cuda is None else \
                'no CUDA GPU visible'
            raise ValueError(f'device {device!r} requested, but CUDA is not available '
                             f'({built}); use --device cpu')
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f'device {device!r} requested, but only {count} CUDA '
                             f'device(s) are visible (cuda:0..cuda:{count - 1})')
    elif dev.type != 'cpu':
        module = getattr(torch, dev.type, None)
        available = getattr(module, 'is_available', None)
        if available is not None and not available():
            raise ValueError(f'device {device!r} requested, but {dev.type} is not available')
    return dev


def launched_by_torchrun() -> bool:
    """True in a worker started by torchrun (``torch.distributed.run``)."""
    return 'TORCHELASTIC_RUN_ID' in os.environ


_watchdog: Optional[threading.Thread] = None


def exit_with_parent(interval: float = 0.5, grace: float = 5.0) -> bool:
    """End this process (and its process group) when its parent process dies.

    A daemon thread polls ``os.getppid()``; once the parent is gone (the process was
    re-parented to init or a subreaper) it prints one line to stderr and sends SIGTERM to the
    process group if this process leads one (torchrun starts each worker in a new session, so
    data loader workers go too), else to itself; after ``grace`` seconds it calls
    ``os._exit(1)``. Polling rather than ``prctl(PR_SET_PDEATHSIG)``: the kernel sends that
    signal when the parent *thread* that forked us exits, which need not be the parent
    process's end. Idempotent; returns True if the watchdog runs.
    """
    global _watchdog
    if _watchdog is not None:
        return True
    parent = os.getppid()
    if parent <= 1:  # already orphaned (or started by init): nothing to watch
        return False

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        try:
            print(f'[pid {os.getpid()}] parent process {parent} (the launcher) is gone; '
                  'exiting', file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001  (stderr may be closed)
            pass
        pid = os.getpid()
        try:
            if os.getpgid(0) == pid:
                os.killpg(pid, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
        time.sleep(grace)  # a SIGTERM handler may be cleaning up
        os._exit(1)

    _watchdog = threading.Thread(target=watch, name='exit_with_parent', daemon=True)
    _watchdog.start()
    return True


def close_distributed() -> None:
    """Destroy the default process group, if one is initialized (else nothing).

    Called when a distributed tool has finished. A gloo group left to the interpreter's exit
    is torn down with the C++ statics, and its threads can then abort the process
    ("terminate called without an active exception", exit -6) after the work is done: seen
    once on rank 0 of ``tools/dist_test_ov.sh`` in a CI run on a loaded machine.
    """
    import torch.distributed as torch_dist
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
