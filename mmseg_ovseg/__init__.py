"""mmseg-ovseg: CLIP/ViT segmentation methods as an MMSegmentation 1.x plugin.

``custom_imports=dict(imports=['mmseg_ovseg'], allow_failed_imports=False)`` in a config
imports this package, which registers every model, dataset, transform and metric into mmseg's
registries.
"""
from . import utils  # noqa: F401,E402  (first: patches checkpoint loading)
from .version import __version__  # noqa: F401

# isort: split
from . import clip, datasets, engine, evaluation, models  # noqa: F401,E402

__all__ = ['__version__']
