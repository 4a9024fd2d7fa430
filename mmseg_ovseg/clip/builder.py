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

OpenAI checkpoints and QuickGELU: every CLIP OpenAI released was trained with QuickGELU
(``x * sigmoid(1.702 x)``) in its transformer MLPs, while open_clip's plain names (``'RN50'``,
``'ViT-B-16'``) build ``nn.GELU``. The weights load either way (same keys and shapes), so a
wrong name would change every text (and ViT) activation silently. Loading therefore refuses a
tower with ``nn.GELU`` blocks when the checkpoint is recognised as OpenAI's (``openai_origin``):

1. a TorchScript archive: OpenAI ships CLIP only as TorchScript (``RN50.pt``, ``ViT-B-16.pt``,
   ...), while open_clip, timm and Hugging Face save plain state dicts;
2. a state dict holding the archive-only entries ``input_resolution``, ``context_length`` and
   ``vocab_size`` (an OpenAI archive's ``state_dict()`` saved again).

A plain state dict in CLIP's key layout without those entries (open_clip's re-exports of the
OpenAI weights, LAION/DataComp checkpoints) cannot be told apart by its keys and loads as
given; ``tests/test_config_fidelity.py`` checks that every shipped config meant for OpenAI
weights names a QuickGELU tower. ResNet image towers have no GELU and load either way.
"""
import copy
import math
import os.path as osp
import zipfile
from typing import Dict, Iterable, List, Optional, Tuple, Union

import open_clip
import torch
import torch.nn as nn
from open_clip.model import _build_text_tower, _build_vision_tower
from open_clip.transformer import QuickGELU

from mmseg_ovseg.utils.strict_load import compare_state_dict

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
            f'{[n for n in open_clip.list_models() if n.startswith(("ViT-B", "ViT-L", "RN"))][:12]}'
        )
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


def _read_clip_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """``(state dict, why it is an OpenAI checkpoint or None)``; see ``load_clip_state_dict``
    and the module docstring for the rule."""
    if path is None or not osp.isfile(str(path)):
        raise FileNotFoundError(f'CLIP checkpoint not found: {path!r} (pretrained must be a '
                                'local file; nothing is downloaded at run time)')
    path = str(path)
    openai = None
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        state = load_file(path, device='cpu')
    elif _is_torchscript_archive(path):
        try:
            state = torch.jit.load(path, map_location='cpu').state_dict()
        except RuntimeError as e:  # torch's message does not name the file
            reason = ' '.join(str(e).split())[:200]
            raise ValueError(f'{path}: not a loadable TorchScript CLIP archive ({reason})') \
                from e
        openai = 'a TorchScript archive, the format OpenAI releases CLIP in'
    else:
        state = torch.load(path, map_location='cpu', weights_only=True)
        for wrapper in ('state_dict', 'model'):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise ValueError(f'{path}: expected a non-empty state dict, got {type(state).__name__}')
    if openai is None and all(k in state for k in _OPENAI_EXTRA_KEYS):
        openai = (f'a state dict with the entries {list(_OPENAI_EXTRA_KEYS)} that only '
                  'OpenAI\'s TorchScript archives carry')
    out = {}
    for key, value in state.items():
        if key in _OPENAI_EXTRA_KEYS or not torch.is_tensor(value):
            continue
        if key.startswith('module.'):
            key = key[len('module.'):]
        out[key] = value.float() if value.is_floating_point() else value
    return out, openai


def load_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a full CLIP state dict (float32, CPU) from a local file.

    Accepts OpenAI TorchScript archives, open_clip/torch state dicts (optionally wrapped in
    ``state_dict``/``model``, optionally with a ``module.`` prefix) and ``.safetensors``.
    """
    return _read_clip_checkpoint(path)[0]


def openai_origin(path: str) -> Optional[str]:
    """Why the CLIP checkpoint at ``path`` is recognised as an OpenAI release (then its
    towers need QuickGELU), or ``None`` when it is not (rule: module docstring)."""
    return _read_clip_checkpoint(path)[1]


def gelu_blocks(module: nn.Module) -> List[str]:
    """Names of the open_clip transformer blocks in ``module`` whose MLP activation is not
    QuickGELU (``[]`` for QuickGELU towers and for ResNet image towers, which have none)."""
    out = []
    for name, m in module.named_modules():
        mlp = getattr(m, 'mlp', None)
        if not (isinstance(mlp, nn.Sequential) and hasattr(mlp, 'c_fc')
                and hasattr(mlp, 'c_proj')):
            continue  # not a CLIP residual attention block
        acts = [a for n, a in mlp.named_children() if n not in ('c_fc', 'c_proj', 'ln')
                and not isinstance(a, nn.Dropout)]
        if not all(isinstance(a, QuickGELU) for a in acts):
            out.append(name)
    return out


def _openai_signature(vision: dict, embed_dim: int) -> tuple:
    """What identifies an OpenAI CLIP architecture: image tower type, depth, width, patch,
    resolution and embedding width."""
    layers = vision.get('layers')
    if isinstance(layers, (list, tuple)):
        return ('resnet', tuple(layers), vision.get('width', 64), vision.get('image_size', 224),
                embed_dim)
    return ('vit', layers, vision.get('width'), vision.get('patch_size'),
            vision.get('image_size', 224), embed_dim)


def _state_signature(state: Dict[str, torch.Tensor]) -> Optional[tuple]:
    try:
        embed_dim = state['text_projection'].shape[1]
        if 'visual.attnpool.positional_embedding' in state:
            layers = tuple(
                len({k.split('.')[2] for k in state if k.startswith(f'visual.layer{i}.')})
                for i in range(1, 5))
            grid = math.isqrt(state['visual.attnpool.positional_embedding'].shape[0] - 1)
            return ('resnet', layers, state['visual.conv3.weight'].shape[0], grid * 32,
                    embed_dim)
        conv1 = state['visual.conv1.weight']
        blocks = {k.split('.')[3] for k in state if k.startswith('visual.transformer.resblocks.')}
        grid = math.isqrt(state['visual.positional_embedding'].shape[0] - 1)
        return ('vit', len(blocks), conv1.shape[0], conv1.shape[-1], grid * conv1.shape[-1],
                embed_dim)
    except (KeyError, IndexError):
        return None


def guess_openai_model(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """The open_clip name of the OpenAI CLIP release (``'RN50'``, ``'ViT-B-16'``, ...) whose
    architecture a full CLIP state dict has, or ``None``."""
    sig = _state_signature(state)
    for name in open_clip.list_openai_models():
        cfg = open_clip.get_model_config(name)
        if cfg is not None and _openai_signature(cfg['vision_cfg'], cfg['embed_dim']) == sig:
            return name
    return None


def _check_quickgelu(module: nn.Module, pretrained: str, openai: Optional[str],
                     state: Dict[str, torch.Tensor], what: str) -> None:
    """Refuse to load an OpenAI checkpoint into a tower with ``nn.GELU`` blocks."""
    if openai is None:
        return
    blocks = gelu_blocks(module)
    if not blocks:
        return
    name = guess_openai_model(state)
    fix = (f"use clip_model='{name}-quickgelu' instead of '{name}'" if name else
           "use the '-quickgelu' open_clip name (e.g. 'RN50-quickgelu', "
           "'ViT-B-16-quickgelu')")
    raise ValueError(
        f'{pretrained} is an OpenAI CLIP checkpoint ({openai}); OpenAI trained CLIP with '
        f'QuickGELU, but {len(blocks)} transformer blocks of {what} use another activation '
        f'(nn.GELU: {blocks[:2]}{" ..." if len(blocks) > 2 else ""}). The weights would load '
        f'and silently compute something else: {fix}, or set quick_gelu=True in a config '
        'dict.')


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
    unexpected and shape-mismatched keys for a checkpoint of another architecture, or that
    names the ``-quickgelu`` fix for an OpenAI checkpoint and a tower with ``nn.GELU`` blocks
    (module docstring). The module is left untouched when anything does not match.

    Args:
        module: the open_clip tower (or a module whose state-dict names are the tower's).
        pretrained: local checkpoint path.
        tower: 'visual' or 'text'.
        ignore_missing: module keys (prefixes) that a CLIP checkpoint cannot hold, e.g. the
            learnable prompts a paper adds to the tower.
    """
    full, openai = _read_clip_checkpoint(pretrained)
    _check_quickgelu(module, pretrained, openai, full,
                     f'the {tower} tower of this model ({type(module).__name__})')
    state = select_tower_state(full, tower)
    if not state:
        raise ValueError(f'{pretrained}: no {tower} tower weights found; is this a CLIP '
                         'checkpoint?')
    mismatch = compare_state_dict(module, state, ignore_missing=ignore_missing,
                                  allow_missing_bn_counter=False)
    if mismatch:
        raise ValueError(
            f'{pretrained} does not match the {tower} tower of this model '
            f'({type(module).__name__}); wrong architecture or model name? '
            f'{mismatch.describe(limit=10)}')
    module.load_state_dict(state, strict=False)


def create_clip(model: ClipModel, pretrained: Optional[str] = None) -> nn.Module:
    """A whole open_clip ``CLIP`` (both towers), optionally with local weights; for tests,
    parity checks and converters."""
    cfg = get_clip_config(model)
    clip = open_clip.CLIP(**cfg)
    if pretrained is not None:
        state, openai = _read_clip_checkpoint(pretrained)
        _check_quickgelu(clip, pretrained, openai, state, f'CLIP {model!r}')
        mismatch = compare_state_dict(clip, state, allow_missing_bn_counter=False)
        if mismatch:
            raise ValueError(f'{pretrained} does not match CLIP {model!r}; wrong architecture '
                             f'or model name? {mismatch.describe(limit=10)}')
        clip.load_state_dict(state)
    return clip
