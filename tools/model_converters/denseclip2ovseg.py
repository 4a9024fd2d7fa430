"""Convert an official DenseCLIP segmentation checkpoint (mmseg 0.x, raoyongming/DenseCLIP)
to mmseg-ovseg's ``DenseCLIP``.

Key mapping (official -> ours):

- ``backbone.*`` (``CLIPResNetWithAttention``: ``conv1..bn3``, ``layer1-4``, ``attnpool``)
  -> ``backbone.visual.*`` (open_clip's ModifiedResNet uses CLIP's names; only the prefix
  changes). The attention-pool position embedding is kept as is: ``(1 + 16*16, C)`` for the
  official 512 crop, matching ``CLIPResNetWithAttention(input_resolution=512)``;
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

Any other key (e.g. the ViT backbone's ``fpn1``-``fpn4`` adapters, not implemented here) is an
error naming the keys, and nothing is written.

Usage::

    python tools/model_converters/denseclip2ovseg.py denseclip_fpn_res50.pth converted.pth
"""
import re
import sys
from collections import OrderedDict
from typing import Dict

import torch

from mmseg_ovseg.utils.converter_cli import run_converter

_RESNET = ('conv1.', 'bn1.', 'conv2.', 'bn2.', 'conv3.', 'bn3.', 'layer1.', 'layer2.',
           'layer3.', 'layer4.', 'attnpool.')
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


def convert_denseclip(state: Dict[str, torch.Tensor],
                      text_positions: int = 77) -> 'OrderedDict[str, torch.Tensor]':
    """Map an official DenseCLIP state dict to mmseg-ovseg ``DenseCLIP`` keys (module doc).

    Raises:
        KeyError: keys outside the official ResNet DenseCLIP layout, or missing
            ``contexts``/``gamma``.
        ValueError: tensors of unexpected shapes (``contexts``, text positions).
    """
    out, unknown = OrderedDict(), []
    for key, value in state.items():
        if '.loss_decode.' in key:
            continue  # loss criterion buffers, not model weights
        if key.startswith('backbone.'):
            name = key[len('backbone.'):]
            if name.startswith(_RESNET):
                out['backbone.visual.' + name] = value
            else:
                unknown.append(key)
        elif key == 'text_encoder.positional_embedding':
            rows = value.shape[0]
            if rows > text_positions:
                raise ValueError(f'{key}: {rows} rows, more than --text-positions '
                                 f'{text_positions}')
            if rows < text_positions:
                value = torch.cat([value, value.new_zeros(text_positions - rows,
                                                          value.shape[1])])
            out[key] = value
        elif key.startswith('text_encoder.'):
            out[key] = value
        elif key == 'contexts':
            if value.dim() == 3 and value.shape[0] == 1:
                value = value[0]
            if value.dim() != 2:
                raise ValueError(f'contexts: expected (1, N, W) or (N, W), got '
                                 f'{tuple(value.shape)}')
            out['text_encoder.contexts'] = value
        elif key == 'gamma':
            out['context_decoder.gamma'] = value
        elif key.startswith(_UNCHANGED):
            out[key] = value
        else:
            new = _map_decoder_key(key)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
    if unknown:
        hint = (' (the ViT backbone FPN adapters fpn1-fpn4 are not implemented in '
                'mmseg-ovseg)' if any('.fpn' in k for k in unknown) else '')
        raise KeyError(f'{len(unknown)} keys not in the official DenseCLIP (ResNet) layout'
                       f'{hint}: {unknown[:10]}')
    missing = [k for k in ('text_encoder.contexts', 'context_decoder.gamma') if k not in out]
    if missing:
        raise KeyError(f'not a DenseCLIP checkpoint: no {missing} (official keys '
                       '"contexts", "gamma")')
    return out


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
