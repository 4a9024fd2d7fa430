"""``--cfg-options`` with the one config variable of the CLIP weight file, ``clip_pretrained``.

The configs name the CLIP checkpoint once, as a top-level variable, and pass it to every CLIP
tower (``model.backbone.pretrained = clip_pretrained``, ``model.text_encoder.pretrained =
clip_pretrained``). mmengine substitutes variables when the file is read, so
``--cfg-options clip_pretrained=X`` alone would change the variable and none of the towers:
:func:`merge_cfg_options` merges the options and, when ``clip_pretrained`` is among them, sets
the ``pretrained`` of every CLIP tower of ``cfg.model`` to it (``None``: random towers).

The file is read by the towers' ``init_weights`` (mmengine's Runner calls it before
training); loading a full checkpoint (``tools/test.py``, ``tools/infer.py``,
``mmseg.apis.init_model``) never needs it.
"""
from typing import List, Optional

from mmengine.config import Config

__all__ = ['CLIP_TOWER_TYPES', 'clip_towers', 'merge_cfg_options']

#: Registered modules whose ``pretrained`` argument is a CLIP checkpoint.
CLIP_TOWER_TYPES = ('CLIPVisionTransformer', 'CLIPResNetWithAttention', 'OVCLIPTextEncoder',
                    'ContextCLIPTextEncoder')


def clip_towers(model_cfg, prefix: str = 'model') -> List[tuple]:
    """``[(dotted path, tower config dict)]`` of the CLIP towers in a model config."""
    found = []
    if isinstance(model_cfg, dict):
        if model_cfg.get('type') in CLIP_TOWER_TYPES:
            found.append((prefix, model_cfg))
        for key, value in model_cfg.items():
            found += clip_towers(value, f'{prefix}.{key}')
    elif isinstance(model_cfg, (list, tuple)):
        for i, value in enumerate(model_cfg):
            found += clip_towers(value, f'{prefix}.{i}')
    return found


def merge_cfg_options(cfg: Config, cfg_options: Optional[dict]) -> Config:
    """``cfg.merge_from_dict(cfg_options)``; ``clip_pretrained=X`` also sets every CLIP
    tower's ``pretrained`` to X (module docstring). Returns ``cfg`` (changed in place)."""
    if not cfg_options:
        return cfg
    cfg.merge_from_dict(cfg_options)
    if 'clip_pretrained' in cfg_options:
        value = cfg_options['clip_pretrained']
        if isinstance(value, str) and value.lower() in ('none', 'null', ''):
            value = None
        cfg.clip_pretrained = value
        towers = clip_towers(cfg.get('model'))
        if not towers:
            raise KeyError('clip_pretrained given, but the model of this config has no CLIP '
                           f'tower ({", ".join(CLIP_TOWER_TYPES)})')
        for _, tower in towers:
            tower['pretrained'] = value
    return cfg
