"""Convert an official SegViT checkpoint (mmseg 0.24, zbwxp/SegVit) to mmseg-ovseg.

Key mapping (official -> ours):

- ``backbone.*`` unchanged: mmseg 0.x and 1.x ``VisionTransformer`` (and the Shrunk ViT, which
  adds no parameters) share their keys;
- plain SegViT (``ATMHead``): ``decode_head.input_proj_<n>`` / ``proj_norm_<n>`` /
  ``decoder_<n>.layers.<j>`` -> ``decode_head.input_proj.<n-1>`` / ``proj_norm.<n-1>`` /
  ``decoders.<n-1>.layers.<j>``; inside a layer ``multihead_attn.{q,k,v,proj}`` ->
  ``cross_attn.{q,k,v,proj}``, ``linear1``/``linear2`` -> ``ffn.0``/``ffn.3``
  (``self_attn``, ``norm1-3`` unchanged); ``decode_head.q`` -> ``decode_head.queries``;
  ``class_embed`` unchanged;
- SegViT-Shrunk (``TPNATMHead``): its QU part (``input_proj_<n>``, ``proj_norm_<n>``,
  ``decoder_<n>`` = torch ``TransformerDecoder``, ``q``) -> ``neck.*`` of
  :class:`QueryUpsampling` (``input_proj.<n-1>``, ``proj_norm.<n-1>``, ``decoders.<n-1>``,
  ``queries``); its ``decode_head.atm.*`` (the single-level ATM head) -> ``decode_head.*`` as
  above;
- dropped: the loss buffers ``*.loss_decode.*`` (``criterion.empty_weight``).

Any other key is an error, and so is an incomplete official layout: the ViT's class token,
position embedding, patch projection weight **and bias** (mmseg 0.x always builds it; build
our model with ``patch_bias=True``, as the SegViT configs do), every key of every encoder
layer ``0..L-1`` and of every ATM / QU decoder layer, the class queries and class head.
``--config`` (shared converter option) checks that the result loads strictly into a config's
model. Usage::

    python tools/model_converters/segvit2ovseg.py official.pth converted.pth
"""
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict

import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

from mmseg_ovseg.utils.converter_cli import run_converter  # noqa: E402

_STAGE = re.compile(r'^(input_proj|proj_norm|decoder)_(\d+)\.(.+)$')
_ATM_LAYER = re.compile(r'^layers\.(\d+)\.(.+)$')
_ATM_LAYER_MAP = {
    'multihead_attn.': 'cross_attn.',
    'linear1.': 'ffn.0.',
    'linear2.': 'ffn.3.',
    'self_attn.': 'self_attn.',
    'norm1.': 'norm1.',
    'norm2.': 'norm2.',
    'norm3.': 'norm3.',
}


def _atm_head_key(name: str) -> str:
    """Key of an official ATM head (``ATMHead``/``ATMSingleHead``) relative to the head, or
    None if it is not part of that layout."""
    if name.startswith('q.'):
        return 'queries.' + name[2:]
    if name.startswith('class_embed.'):
        return name
    m = _STAGE.match(name)
    if m is None:
        return None
    kind, n, rest = m.group(1), int(m.group(2)) - 1, m.group(3)
    if kind != 'decoder':
        return f'{kind}.{n}.{rest}'
    lm = _ATM_LAYER.match(rest)
    if lm is None:
        return None
    j, tail = lm.groups()
    for old, new in _ATM_LAYER_MAP.items():
        if tail.startswith(old):
            return f'decoders.{n}.layers.{j}.{new}{tail[len(old):]}'
    return None


def _qu_key(name: str) -> str:
    """Key of the official TPN (QU) part relative to our ``QueryUpsampling`` neck."""
    if name.startswith('q.'):
        return 'queries.' + name[2:]
    m = _STAGE.match(name)
    if m is None:
        return None
    kind, n, rest = m.group(1), int(m.group(2)) - 1, m.group(3)
    return f'{"decoders" if kind == "decoder" else kind}.{n}.{rest}'


# Per-layer keys of the official modules (mmseg 0.x ViT layer, TPN_DecoderLayer of the ATM
# decoders, torch TransformerDecoderLayer of the QU decoders).
_VIT_LAYER_KEYS = tuple(
    f'{m}.{p}' for m in ('ln1', 'ln2', 'attn.attn.out_proj', 'ffn.layers.0.0', 'ffn.layers.1')
    for p in ('weight', 'bias')) + ('attn.attn.in_proj_weight', 'attn.attn.in_proj_bias')
_TORCH_DEC_COMMON = tuple(
    f'{m}.{p}' for m in ('self_attn.out_proj', 'linear1', 'linear2', 'norm1', 'norm2', 'norm3')
    for p in ('weight', 'bias')) + ('self_attn.in_proj_weight', 'self_attn.in_proj_bias')
_ATM_DEC_KEYS = _TORCH_DEC_COMMON + tuple(
    f'multihead_attn.{m}.{p}' for m in ('q', 'k', 'v', 'proj') for p in ('weight', 'bias'))
_QU_DEC_KEYS = _TORCH_DEC_COMMON + (
    'multihead_attn.in_proj_weight', 'multihead_attn.in_proj_bias',
    'multihead_attn.out_proj.weight', 'multihead_attn.out_proj.bias')
_VIT_KEYS = ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
             'patch_embed.projection.bias')


def _indices(state, prefix: str, pattern: str):
    """Sorted indices ``i`` of keys ``prefix + pattern.format(i) + ...``."""
    found = set()
    rx = re.compile(re.escape(prefix) + pattern.replace('{}', r'(\d+)') + r'(\.|$)')
    for key in state:
        m = rx.match(key)
        if m:
            found.add(int(m.group(1)))
    return sorted(found)


def _stack_keys(state, prefix: str, layer_keys):
    """Expected keys of a layer stack ``prefix<i>.<layer key>``, i = 0..max found."""
    idx = _indices(state, prefix, '{}')
    if not idx:
        return [f'{prefix}0.{k}' for k in layer_keys]  # the whole stack is missing
    return [f'{prefix}{i}.{k}' for i in range(idx[-1] + 1) for k in layer_keys]


def missing_official_keys(state: Dict[str, torch.Tensor], shrunk: bool):
    """Keys an official SegViT (``shrunk``: SegViT-Shrunk) state dict must have but lacks."""
    need = ['backbone.' + k for k in _VIT_KEYS]
    need += _stack_keys(state, 'backbone.layers.', _VIT_LAYER_KEYS)
    heads = [('decode_head.atm.' if shrunk else 'decode_head.', _ATM_DEC_KEYS, not shrunk)]
    if shrunk:  # TPNATMHead's own (QU) part
        heads.append(('decode_head.', _QU_DEC_KEYS, True))
    for head, layer_keys, proj in heads:
        need += [head + 'q.weight']
        if layer_keys is _ATM_DEC_KEYS:
            need += [head + 'class_embed.weight', head + 'class_embed.bias']
        stages = _indices(state, head, 'decoder_{}') or [1]
        for n in range(1, stages[-1] + 1):
            if proj:
                need += [f'{head}{m}_{n}.{p}' for m in ('input_proj', 'proj_norm')
                         for p in ('weight', 'bias')]
            need += _stack_keys(state, f'{head}decoder_{n}.layers.', layer_keys)
    return [k for k in need if k not in state]


def convert_segvit(state: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Map an official SegViT / SegViT-Shrunk state dict to mmseg-ovseg keys (module doc).

    Raises:
        KeyError: naming keys that are not in the official layouts, or official keys that are
            missing (e.g. ``backbone.patch_embed.projection.bias``).
    """
    shrunk = any(k.startswith('decode_head.atm.') for k in state)
    missing = missing_official_keys(state, shrunk)
    if missing:
        raise KeyError(f'{len(missing)} keys of the official SegViT{"-Shrunk" if shrunk else ""} '
                       f'layout are missing: {missing[:10]}'
                       + (f' ... and {len(missing) - 10} more' if len(missing) > 10 else ''))
    out, unknown = OrderedDict(), []
    for key, value in state.items():
        if key.startswith('backbone.'):
            out[key] = value
            continue
        if not key.startswith('decode_head.') or '.loss_decode.' in key:
            if '.loss_decode.' not in key:
                unknown.append(key)
            continue
        name = key[len('decode_head.'):]
        if shrunk and name.startswith('atm.'):
            new = _atm_head_key(name[len('atm.'):])
            new = new and 'decode_head.' + new
        elif shrunk:
            new = _qu_key(name)
            new = new and 'neck.' + new
        else:
            new = _atm_head_key(name)
            new = new and 'decode_head.' + new
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise KeyError(f'{len(unknown)} keys not in the official SegViT layout: {unknown[:10]}')
    return out


def main(argv=None) -> int:
    return run_converter('segvit2ovseg', __doc__.split('\n')[0],
                         'official SegViT checkpoint (.pth)',
                         lambda state, args: convert_segvit(state), argv)


if __name__ == '__main__':
    sys.exit(main())
