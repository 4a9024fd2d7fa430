"""Change the length of an iteration-based training config."""
from mmengine.config import Config


def set_max_iters(cfg: Config, max_iters: int) -> Config:
    """Train ``cfg`` for ``max_iters`` iterations, in place; returns ``cfg``.

    ``param_scheduler`` phases that would start at or after the new end are dropped (e.g. the
    poly phase after a warm-up longer than the run), the others are cut at it, and the phase
    that ended with the old schedule ends with the new one: a longer run decays over its
    whole length instead of running at lr 0 after the old end. The checkpoint interval
    becomes ``max_iters`` (one checkpoint, at the end).
    """
    cfg.train_cfg.max_iters = max_iters
    old_end = max(s.end for s in cfg.param_scheduler)
    scheds = [s for s in cfg.param_scheduler if s.get('begin', 0) < max_iters]
    for s in scheds:
        s.end = max_iters if s.end == old_end else min(s.end, max_iters)
    cfg.param_scheduler = scheds
    cfg.default_hooks.checkpoint.interval = max_iters
    return cfg
