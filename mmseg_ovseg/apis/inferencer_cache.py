"""Inferencers kept between requests (``tools/webui.py``): one model build per
(config, checkpoint, device), not one per image."""
import collections
import os.path as osp
import threading
from typing import Optional

__all__ = ['InferencerCache']


class InferencerCache:
    """:class:`~.inferencer.OpenVocabInferencer` objects built once per (config, checkpoint,
    device) and kept, the least recently used dropped beyond ``size``. A file changed on disk
    (modification time) is rebuilt. Thread-safe.

    Args:
        device (str): ``'cpu'``, ``'cuda:0'``, ...
        cfg_options (dict, optional): config overrides for every model.
        size (int): models kept.
    """

    def __init__(self, device: str = 'cpu', cfg_options: Optional[dict] = None,
                 size: int = 2):
        if size < 1:
            raise ValueError(f'cache size must be >= 1, got {size}')
        self.device = device
        self.cfg_options = cfg_options
        self.size = size
        self.builds = 0  # models built so far
        self._models = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, config: str, checkpoint: Optional[str]):
        """The inferencer of the ``config`` file with the ``checkpoint`` file (None: the
        config's initialisation), built on first use."""
        key = (osp.realpath(config), osp.getmtime(config),
               None if checkpoint is None else osp.realpath(checkpoint),
               None if checkpoint is None else osp.getmtime(checkpoint), self.device)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            while len(self._models) >= self.size:  # free memory before the next build
                self._models.popitem(last=False)
            inferencer = self.build(config, checkpoint)
            self.builds += 1
            self._models[key] = inferencer
            return inferencer

    def build(self, config: str, checkpoint: Optional[str]):
        """A new inferencer (called by :meth:`get` on a miss)."""
        from .inferencer import OpenVocabInferencer
        return OpenVocabInferencer(config, checkpoint, device=self.device,
                                   cfg_options=self.cfg_options)
