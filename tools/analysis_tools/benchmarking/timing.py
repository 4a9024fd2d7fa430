"""Timing and peak memory of callables (``tools/analysis_tools/benchmark.py``'s core).

Peak memory: CPU, the resident set size sampled from ``/proc/self/statm`` by a thread after
freed heap memory is returned to the OS with ``malloc_trim``; CUDA,
``torch.cuda.max_memory_allocated``.
"""
import ctypes
import gc
import os
import resource
import statistics
import threading
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Tuple

import torch

_PAGE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096


# ------------------------------------------------------------------ memory
def _release_free_memory() -> None:
    """Give memory freed by earlier runs back to the OS, so the next RSS peak is its own."""
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _current_rss() -> Optional[int]:
    """Resident set size of this process in bytes (Linux ``/proc``), or None."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class _PeakRSS:
    """Highest RSS seen while the block runs, sampled every ``interval`` seconds.

    The process-wide ``ru_maxrss`` cannot be reset, so after a bigger model has run it would
    hide a smaller one's peak; sampling the current RSS measures each model on its own.
    Falls back to the ``ru_maxrss`` delta where ``/proc`` is missing.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.base = self.peak = None
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            rss = _current_rss()
            if rss is not None and rss > self.peak:
                self.peak = rss
            self._stop.wait(self.interval)

    def __enter__(self):
        self.base = _current_rss()
        if self.base is None:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self._thread = None
        else:
            self.peak = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is None:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            self._stop.set()
            self._thread.join()
            rss = _current_rss()
            self.peak = max(self.peak, rss or 0)

    @property
    def delta_mb(self) -> float:
        return max(self.peak - self.base, 0) / 2**20


# ------------------------------------------------------------------ timing
def _autocast(device_type: str, bf16: bool):
    return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def _peak_memory(fn: Callable, inputs, cuda: bool) -> Tuple[float, str]:
    """Peak memory (MB above the level before it) of one run of ``fn``, and how it was read.

    Read apart from the timed runs so the sampling thread does not disturb them.
    """
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        mem_base = torch.cuda.memory_allocated()
        fn(inputs)
        _sync(cuda)
        return ((torch.cuda.max_memory_allocated() - mem_base) / 2**20,
                'cuda max_memory_allocated delta')
    _release_free_memory()
    with _PeakRSS() as peak:
        fn(inputs)
    return peak.delta_mb, 'peak RSS delta'


def benchmark_models(models: Dict[str, Callable],
                     inputs,
                     warmup: int = 3,
                     runs: int = 10,
                     bf16: bool = False,
                     device: Optional[str] = None) -> Dict[str, dict]:
    """Time each callable on the same inputs, one model after the other.

    Args:
        models: ``{name: fn}``; ``fn(inputs)`` runs one inference (the first entry is the
            reference when ``ratio`` is read off the results).
        inputs: passed unchanged to every ``fn``.
        warmup: untimed runs of every model before any is measured (allocator, lazy init,
            text-embedding caches).
        runs: timed runs.
        bf16: run under ``torch.autocast(dtype=torch.bfloat16)``.
        device: ``'cpu'``/``'cuda'``: where to synchronise and read memory; default: the
            device of ``inputs`` if it is a tensor, else CPU.

    Returns:
        ``{name: dict(median_ms, min_ms, mean_ms, runs, warmup, threads, bf16, device,
        peak_mem_mb, mem_kind)}``.
    """
    if runs < 1:
        raise ValueError(f'runs must be >= 1, got {runs}')
    if device is None:
        device = inputs.device.type if isinstance(inputs, torch.Tensor) else 'cpu'
    device_type = torch.device(device).type
    cuda = device_type == 'cuda'

    # Warm every model up first, so process-wide one-time costs (thread pools, kernel
    # caches) are not charged to whichever model happens to run first.
    with torch.no_grad(), _autocast(device_type, bf16):
        for fn in models.values():
            for _ in range(warmup):
                fn(inputs)
        _sync(cuda)

    results = {}
    for name, fn in models.items():
        with torch.no_grad(), _autocast(device_type, bf16):
            mem_mb, mem_kind = _peak_memory(fn, inputs, cuda)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn(inputs)
                _sync(cuda)
                times.append((time.perf_counter() - start) * 1000)
        results[name] = dict(
            median_ms=statistics.median(times), min_ms=min(times),
            mean_ms=statistics.fmean(times), runs=runs, warmup=warmup,
            threads=torch.get_num_threads(), bf16=bf16, device=device,
            peak_mem_mb=mem_mb, mem_kind=mem_kind)
    return results


def interleaved_rounds(models: Dict[str, Tuple[Callable, bool]], inputs, rounds: int,
                       device: Optional[str] = None) -> Dict[str, List[float]]:
    """Time ``rounds`` rounds in which every model runs once, the order rotated each round.

    On a shared machine the load changes over seconds; the ratio of two models *within* a
    round is much steadier than the ratio of medians taken minutes apart.

    Args:
        models: ``{name: (fn, bf16)}``; ``bf16`` runs that model under bfloat16 autocast.
        inputs: passed unchanged to every ``fn``.
        rounds: number of rounds.

    Returns:
        ``{name: [seconds per round]}``.
    """
    if device is None:
        device = inputs.device.type if isinstance(inputs, torch.Tensor) else 'cpu'
    device_type = torch.device(device).type
    names = list(models)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, bf16 = models[name]
            ctx = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else nullcontext()
            with torch.no_grad(), ctx:
                start = time.perf_counter()
                fn(inputs)
                if device_type == 'cuda':
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    return times

