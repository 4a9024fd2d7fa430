"""Build CLIP towers with open_clip and load local CLIP weights into them.

Every tower is an open_clip module, so parameter names are open_clip's (which are OpenAI's):
an OpenAI ``.pt`` (TorchScript archive), an open_clip ``.pt``/``.bin`` state dict or a
``.safetensors`` file loads without a converter. There is no network access at run time:
``pretrained`` is a local path or ``None`` (random initialisation).

A model is named either by an open_clip model name (``'ViT-B-16'``, ``'ViT-B-16-quickgelu'``,
``'ViT-L-14'``, ``'RN50'``, ``'RN101'``, ...; use the ``-quickgelu`` names with OpenAI weights)
or by a dict in open_clip's config layout, which is how tests and CPU demos build tiny towers::

    dict(embed_dim=32, quick_gelu=True,
         vision_cfg=dict(image_size=64, layers=2, width=64, head_width=32, patch_size=16),
         text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
"""
import copy
import os.path as osp
import zipfile
from typing import Dict, Iterable, Optional, Union

import open_clip
import torch
import torch.nn as nn
from open_clip.model import _build_text_tower, _build_vision_tower

ClipModel = Union[str, dict]

# Keys OpenAI's TorchScript archives carry besides the weights.
_OPENAI_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')
# Keys of the full CLIP model that belong to neither tower.
_SHARED_KEYS = ('logit_scale', 'logit_bias')


def get_clip_config(model: ClipModel) -> dict:
    """Return ``dict(embed_dim, vision_cfg, text_cfg, quick_gelu)`` for a name or a dict."""
    if isinstance(model, dict):
        cfg = copy.deepcopy(model)
        missing = {'embed_dim', 'vision_cfg', 'text_cfg'} - set(cfg)
        if missing:
            raise ValueError(f'CLIP model dict lacks {sorted(missing)}: got keys {sorted(cfg)}')
        cfg.setdefault('quick_gelu', False)
        return cfg
    if not isinstance(model, str):
        raise TypeError(f'CLIP model must be an open_clip name or a config dict, got {type(model)}')
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise ValueError(
            f'Unknown open_clip model name {model!r}. Known names include '
            f'{[n for n in open_clip.list_models() if n.startswith(("ViT-B", "ViT-L", "RN"))][:12]}')
    cfg = copy.deepcopy(cfg)
    quick_gelu = cfg.pop('quick_gelu', False) or model.endswith('-quickgelu')
    return dict(
        embed_dim=cfg['embed_dim'],
        vision_cfg=cfg['vision_cfg'],
        text_cfg=cfg['text_cfg'],
        quick_gelu=quick_gelu)


def build_visual_tower(model: ClipModel) -> nn.Module:
    """The open_clip image tower (``VisionTransformer`` or ``ModifiedResNet``), random init."""
    cfg = get_clip_config(model)
    return _build_vision_tower(cfg['embed_dim'], cfg['vision_cfg'], cfg['quick_gelu'])


def build_text_tower(model: ClipModel) -> nn.Module:
    """The open_clip ``TextTransformer``, random init.

    Its parameter names (``token_embedding``, ``positional_embedding``, ``transformer.*``,
    ``ln_final``, ``text_projection``) are those of the full CLIP model without a prefix.
    """
    cfg = get_clip_config(model)
    return _build_text_tower(cfg['embed_dim'], cfg['text_cfg'], cfg['quick_gelu'])


def _is_torchscript_archive(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith('constants.pkl') or '/code/' in name for name in zf.namelist())


def load_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a full CLIP state dict (float32, CPU) from a local file.

    Accepts OpenAI TorchScript archives, open_clip/torch state dicts (optionally wrapped in
    ``state_dict``/``model``, optionally with a ``module.`` prefix) and ``.safetensors``.
    """
    if path is None or not osp.isfile(str(path)):
        raise FileNotFoundError(f'CLIP checkpoint not found: {path!r} (pretrained must be a '
                                'local file; nothing is downloaded at run time)')
    path = str(path)
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        state = load_file(path, device='cpu')
    elif _is_torchscript_archive(path):
        state = torch.jit.load(path, map_location='cpu').state_dict()
    else:
        state = torch.load(path, map_location='cpu', weights_only=True)
        for wrapper in ('state_dict', 'model'):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise ValueError(f'{path}: expected a non-empty state dict, got {type(state).__name__}')
    out = {}
    for key, value in state.items():
        if key in _OPENAI_EXTRA_KEYS or not torch.is_tensor(value):
            continue
        if key.startswith('module.'):
            key = key[len('module.'):]
        out[key] = value.float() if value.is_floating_point() else value
    return out


def select_tower_state(state: Dict[str, torch.Tensor], tower: str) -> Dict[str, torch.Tensor]:
    """Keys of one tower with the tower prefix removed (``tower`` is 'visual' or 'text')."""
    if tower == 'visual':
        return {k[len('visual.'):]: v for k, v in state.items() if k.startswith('visual.')}
    if tower == 'text':
        out = {k: v for k, v in state.items()
               if not k.startswith('visual.') and k not in _SHARED_KEYS}
        # CustomTextCLIP layout (open_clip 'text.' prefix) -> CLIP layout.
        return {(k[len('text.'):] if k.startswith('text.') else k): v for k, v in out.items()}
    raise ValueError(f"tower must be 'visual' or 'text', got {tower!r}")


def load_tower_weights(module: nn.Module,
                       pretrained: str,
                       tower: str,
                       ignore_missing: Iterable[str] = ()) -> None:
    """Load one tower of a CLIP checkpoint into ``module``, strictly.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` that lists missing,
    unexpected and shape-mismatched keys for a checkpoint of another architecture. The module
    is left untouched when anything does not match.

    Args:
        module: the open_clip tower (or a module whose state-dict names are the tower's).
        pretrained: local checkpoint path.
        tower: 'visual' or 'text'.
        ignore_missing: module keys (prefixes) that a CLIP checkpoint cannot hold, e.g. the
            learnable prompts a paper adds to the tower.
    """
    state = select_tower_state(load_clip_state_dict(pretrained), tower)
    if not state:
        raise ValueError(f'{pretrained}: no {tower} tower weights found; is this a CLIP '
                         'checkpoint?')
    own = module.state_dict()
    ignore = tuple(ignore_missing)
    missing = [k for k in own if k not in state and not k.startswith(ignore)]
    unexpected = [k for k in state if k not in own]
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def _fmt(name, keys):
            return f'\n  {name} ({len(keys)}): {keys[:10]}{" ..." if len(keys) > 10 else ""}'
        raise ValueError(
            f'{pretrained} does not match the {tower} tower of this model '
            f'({type(module).__name__}); wrong architecture or model name?'
            + (_fmt('missing keys', missing) if missing else '')
            + (_fmt('unexpected keys', unexpected) if unexpected else '')
            + (_fmt('shape mismatches', mismatched) if mismatched else ''))
    module.load_state_dict(state, strict=False)


def create_clip(model: ClipModel, pretrained: Optional[str] = None) -> nn.Module:
    """A whole open_clip ``CLIP`` (both towers), optionally with local weights; for tests,
    parity checks and converters."""
    cfg = get_clip_config(model)
    clip = open_clip.CLIP(**cfg)
    if pretrained is not None:
        state = load_clip_state_dict(pretrained)
        result = clip.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f'{pretrained} does not match CLIP {model}: missing '
                             f'{result.missing_keys[:10]}, unexpected '
                             f'{result.unexpected_keys[:10]}')
    return clip
