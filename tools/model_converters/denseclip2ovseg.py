"""Convert an official DenseCLIP segmentation checkpoint (mmseg 0.x, raoyongming/DenseCLIP)
to mmseg-ovseg's ``DenseCLIP``.

Key mapping (official -> ours):

- ``backbone.*`` (``CLIPResNetWithAttention``: ``conv1..bn3``, ``layer1-4``, ``attnpool``)
  -> ``backbone.visual.*`` (open_clip's ModifiedResNet uses CLIP's names; only the prefix
  changes). The attention-pool position embedding is kept as is: ``(1 + 16*16, C)`` for the
  official 512 crop, matching ``CLIPResNetWithAttention(input_resolution=512)``;
- ViT-B checkpoints (``CLIPVisionTransformer``): ``backbone.{conv1, class_embedding,
  positional_embedding, ln_pre, transformer.resblocks.<i>, ln_post, proj}`` ->
  ``backbone.visual.*`` (open_clip's VisionTransformer uses CLIP's names too). The official
  forward adds ``class_embedding`` to the CLS token twice (once as the token, once to its
  position row); open_clip adds it once, so it is folded into the position embedding's CLS
  row (``positional_embedding[0] += class_embedding``): same tokens, exactly. The position
  embedding keeps its ``(1 + 40*40, 768)`` grid of the official 640 crop (build the backbone
  with ``vision_cfg.image_size=640``);
- ``backbone.fpn1``-``fpn4`` (the ViT's adapters) -> ``adapter.fpn1``-``fpn4``
  (``FPNAdapter`` keeps the official submodule indices);
- ``text_encoder.*`` unchanged, except ``text_encoder.positional_embedding``: the official
  tower keeps only its first ``context_length`` (13) rows; it is zero-padded to
  ``--text-positions`` rows (77, CLIP's; our encoder with ``context_length=13`` reads only
  the first 13, so the padding is never used);
- ``contexts (1, N, W)`` -> ``text_encoder.contexts (N, W)``;
- ``gamma (C,)`` -> ``context_decoder.gamma``;
- ``context_decoder.decoder.<i>.*`` -> ``context_decoder.layers.<i>.*`` with
  ``{self_attn,cross_attn}.proj`` -> ``.out_proj`` and ``mlp.{0,3}`` -> ``ffn.{0,3}``;
  ``memory_proj``, ``text_proj``, ``out_proj`` unchanged;
- ``neck.*`` (FPN), ``decode_head.*`` (FPNHead), ``auxiliary_head.*`` unchanged (mmseg 1.x
  kept the 0.x module names); loss buffers ``*.loss_decode.*`` are dropped.

Any other key (or ``fpn*`` adapters without a ViT backbone, or ResNet and ViT backbone keys
mixed) is an error naming the keys, and nothing is written.

Usage::

    python tools/model_converters/denseclip2ovseg.py denseclip_fpn_res50.pth converted.pth
    python tools/model_converters/denseclip2ovseg.py denseclip_fpn_vit-b.pth converted.pth
"""
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from mmseg_ovseg.utils.converter_cli import run_converter

_RESNET = ('conv1.', 'bn1.', 'conv2.', 'bn2.', 'conv3.', 'bn3.', 'layer1.', 'layer2.',
           'layer3.', 'layer4.', 'attnpool.')
# ViT tower: parameters by exact name, modules by prefix (``conv1.`` is in _RESNET).
_VIT_PARAMS = ('class_embedding', 'positional_embedding', 'proj')
_VIT_MODULES = ('ln_pre.', 'transformer.resblocks.', 'ln_post.')
_VIT_ADAPTER = re.compile(r'^backbone\.(fpn[1-4](\..+|$))')
_DECODER = re.compile(r'^context_decoder\.decoder\.(\d+)\.(.+)$')
_DECODER_MAP = (
    ('self_attn.proj.', 'self_attn.out_proj.'),
    ('cross_attn.proj.', 'cross_attn.out_proj.'),
    ('mlp.0.', 'ffn.0.'),
    ('mlp.3.', 'ffn.3.'),
)
_DECODER_SAME = ('norm1.', 'norm2.', 'norm3.', 'self_attn.q_proj.', 'self_attn.k_proj.',
                 'self_attn.v_proj.', 'cross_attn.q_proj.', 'cross_attn.k_proj.',
                 'cross_attn.v_proj.')
_UNCHANGED = ('context_decoder.memory_proj.', 'context_decoder.text_proj.',
              'context_decoder.out_proj.', 'neck.', 'decode_head.', 'auxiliary_head.')


def _map_decoder_key(key: str):
    match = _DECODER.match(key)
    if match is None:
        return None
    idx, rest = match.groups()
    for old, new in _DECODER_MAP:
        if rest.startswith(old):
            return f'context_decoder.layers.{idx}.{new}{rest[len(old):]}'
    if rest.startswith(_DECODER_SAME):
        return f'context_decoder.layers.{idx}.{rest}'
    return None


def _backbone_key(key: str) -> Tuple[Optional[str], Optional[str]]:
    """``backbone.*`` -> (our key or None, the layout it belongs to: ``'vit'``,
    ``'resnet'``, ``'adapter'`` or None for ``conv1``, which both towers have)."""
    name = key[len('backbone.'):]
    if name.startswith(_RESNET + _VIT_MODULES) or name in _VIT_PARAMS:
        if name.startswith(_VIT_MODULES) or name in _VIT_PARAMS:
            return 'backbone.visual.' + name, 'vit'
        return 'backbone.visual.' + name, None if name.startswith('conv1.') else 'resnet'
    adapter = _VIT_ADAPTER.match(key)
    if adapter is not None:
        return 'adapter.' + adapter.group(1), 'adapter'
    return None, None


def _text_value(key: str, value: torch.Tensor, text_positions: int) -> torch.Tensor:
    """The text positions padded to ``text_positions`` rows; ``contexts`` as (N, W)."""
    if key == 'text_encoder.positional_embedding':
        rows = value.shape[0]
        if rows > text_positions:
            raise ValueError(f'{key}: {rows} rows, more than --text-positions '
                             f'{text_positions}')
        if rows < text_positions:
            value = torch.cat([value, value.new_zeros(text_positions - rows, value.shape[1])])
    elif key == 'contexts':
        if value.dim() == 3 and value.shape[0] == 1:
            value = value[0]
        if value.dim() != 2:
            raise ValueError(f'contexts: expected (1, N, W) or (N, W), got '
                             f'{tuple(value.shape)}')
    return value


def convert_denseclip(state: Dict[str, torch.Tensor],
                      text_positions: int = 77) -> 'OrderedDict[str, torch.Tensor]':
    """Map an official DenseCLIP state dict to mmseg-ovseg ``DenseCLIP`` keys (module doc).

    Raises:
        KeyError: keys outside the official ResNet/ViT DenseCLIP layouts, or missing
            ``contexts``/``gamma``.
        ValueError: tensors of unexpected shapes (``contexts``, text positions).
    """
    out, unknown = OrderedDict(), []
    layouts = dict(resnet=[], vit=[], adapter=[])
    for key, value in state.items():
        if '.loss_decode.' in key:
            continue  # loss criterion buffers, not model weights
        if key.startswith('backbone.'):
            new, layout = _backbone_key(key)
            if layout is not None:
                layouts[layout].append(key)
        elif key.startswith('text_encoder.') or key == 'contexts':
            value = _text_value(key, value, text_positions)
            new = 'text_encoder.contexts' if key == 'contexts' else key
        elif key == 'gamma':
            new = 'context_decoder.gamma'
        elif key.startswith(_UNCHANGED):
            new = key
        else:
            new = _map_decoder_key(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    _check_layouts(unknown, **layouts)
    cls_key, pos_key = 'backbone.visual.class_embedding', 'backbone.visual.positional_embedding'
    if cls_key in out:
        if pos_key not in out:
            raise KeyError('ViT DenseCLIP checkpoint with backbone.class_embedding but no '
                           'backbone.positional_embedding')
        pos = out[pos_key].clone()
        pos[0] += out[cls_key].to(pos.dtype)  # the official CLS token's second class_embedding
        out[pos_key] = pos
    missing = [k for k in ('text_encoder.contexts', 'context_decoder.gamma') if k not in out]
    if missing:
        raise KeyError(f'not a DenseCLIP checkpoint: no {missing} (official keys '
                       '"contexts", "gamma")')
    return out


def _check_layouts(unknown: List[str], resnet: List[str], vit: List[str],
                   adapter: List[str]) -> None:
    """Unknown keys, ResNet and ViT backbone keys mixed, or ViT adapters without a ViT are
    errors."""
    if unknown:
        raise KeyError(f'{len(unknown)} keys not in the official DenseCLIP (ResNet or ViT) '
                       f'layout: {unknown[:10]}')
    if resnet and vit:
        raise KeyError(f'mixed backbone layouts: ResNet keys {resnet[:5]} and ViT keys '
                       f'{vit[:5]}')
    if adapter and not vit:
        raise KeyError(f'{len(adapter)} ViT adapter keys (fpn1-fpn4) in a checkpoint '
                       f'without a ViT backbone: {adapter[:10]}')


def main(argv=None) -> int:
    def add_arguments(parser):
        parser.add_argument('--text-positions', type=int, default=77,
                            help="rows of our text tower's positional embedding (CLIP: 77)")

    return run_converter('denseclip2ovseg', __doc__.split('\n')[0],
                         'official DenseCLIP checkpoint (.pth)',
                         lambda state, args: convert_denseclip(state, args.text_positions),
                         argv, add_arguments)


if __name__ == '__main__':
    sys.exit(main())
