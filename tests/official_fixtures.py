"""Official checkpoint layouts recorded as data, filled with random values for converter tests.

Each ``tests/fixtures/official/<name>.json`` records the state-dict key names and shapes of one
official model, written down by running (or reading) the official repository's code -- never
derived from this package's modules, so a converter test built on it can disagree with us.
Layout::

    {"source": {"repo": ..., "commit": ..., "how": ...},
     "keys": {"backbone.conv1.weight": [768, 3, 16, 16], ...}}

``keys`` keeps the official order. Integer buffers (e.g. ``num_batches_tracked``) are listed in
``int_keys``.
"""
import json
import os.path as osp
from collections import OrderedDict
from typing import Dict, List

import torch

FIXTURE_DIR = osp.join(osp.dirname(__file__), 'fixtures', 'official')


def load_layout(name: str) -> dict:
    path = osp.join(FIXTURE_DIR, f'{name}.json')
    with open(path) as f:
        layout = json.load(f)
    for field in ('source', 'keys'):
        if field not in layout:
            raise KeyError(f'{path}: no {field!r} field')
    return layout


def official_keys(name: str) -> Dict[str, List[int]]:
    return OrderedDict(load_layout(name)['keys'])


def random_official_state(name: str, seed: int = 0, std: float = 0.02) -> Dict[str, torch.Tensor]:
    """The official key/shape list of ``name`` filled with seeded random values."""
    layout = load_layout(name)
    ints = set(layout.get('int_keys', ()))
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in layout['keys'].items():
        if key in ints:
            state[key] = torch.zeros(shape, dtype=torch.long)
        else:
            state[key] = torch.randn(shape, generator=gen) * std
    return state
