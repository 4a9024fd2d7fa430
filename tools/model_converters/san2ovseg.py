"""Convert an official SAN release checkpoint (MendelXu/SAN, detectron2) to mmseg-ovseg.

Usage::

    python tools/model_converters/san2ovseg.py SRC DST \
        [--config configs/san_vitb16_coco-stuff.py]

``--config`` builds the config's model (no weight files read) and loads the result into it
strictly first; keys that do not fit are listed in one error and DST is not written.

Key mapping (official -> ours); open_clip names are kept on both sides:

- ``clip_visual_extractor.{conv1,class_embedding,positional_embedding,ln_pre}`` and
  ``clip_visual_extractor.resblocks.<i>`` -> ``backbone.visual.*`` /
  ``backbone.visual.transformer.resblocks.<i>``;
- ``clip_rec_head.resblocks.<j>`` -> ``backbone.visual.transformer.resblocks.<split + j>``,
  ``clip_rec_head.{ln_post,proj}`` -> ``backbone.visual.*``;
- ``ov_classifier.*`` (text tower) -> ``text_encoder.*``; ``ov_classifier.{bg_embed,
  logit_scale}`` -> ``decode_head.*``; the ``attn_mask`` buffer is dropped;
- ``side_adapter_network.vit_model.{patch_embed.proj,pos_embed,blocks}`` ->
  ``decode_head.side_adapter.{patch_embed,pos_embed,blocks}`` (both timm block layout);
  ``side_adapter_network.{query_embed,query_pos_embed}`` -> ``decode_head.side_adapter.*``;
  ``side_adapter_network.fusion_layers.layer_<t>.input_proj.{0,1}`` ->
  ``decode_head.side_adapter.fusion_layers.<k>.{0,1}`` (``k``-th smallest target block ``t``:
  the config's ``fusion_index`` must list those ``t``; printed after conversion);
- ``side_adapter_network.mask_decoder.{query_mlp,pix_mlp}`` -> ``decode_head.mask_decoder.*``,
  ``...mask_decoder.{attn_mlp,bias_scaling}`` -> ``decode_head.bias_decoder.*``;
- dropped: ``criterion.empty_weight``. Any other key is an error.

The released CLIP towers are OpenAI weights: build the backbone/text encoder with
``-quickgelu`` model names.
"""
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from mmseg_san2ovseg import _check_complete  # noqa: E402

from mmseg_ovseg.utils.converter_cli import run_converter  # noqa: E402

_DROPPED = ('criterion.empty_weight', 'ov_classifier.attn_mask')
_VISUAL_TOP = ('conv1.weight', 'class_embedding', 'positional_embedding', 'ln_pre.weight',
               'ln_pre.bias')
_TEXT_TOP = ('token_embedding.weight', 'positional_embedding', 'text_projection',
             'ln_final.weight', 'ln_final.bias')


def _side_adapter_key(k: str, fusion_targets: List[int]) -> Optional[str]:
    """``side_adapter_network.<k>`` -> our side adapter / mask decoder key, or None.

    The official ``fusion_layers.layer_<i>`` (``i``: the side block receiving it) become our
    ``fusion_layers.<j>`` with ``j`` the rank of ``i`` in ``fusion_targets``.
    """
    m_fuse = re.match(r'fusion_layers\.layer_(\d+)\.input_proj\.([01])\.(weight|bias)$', k)
    if k.startswith('vit_model.patch_embed.proj.'):
        return 'decode_head.side_adapter.patch_embed.' + k.split('.')[-1]
    if k == 'vit_model.pos_embed':
        return 'decode_head.side_adapter.pos_embed'
    if re.match(r'vit_model\.blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|'
                r'mlp\.fc2)\.(weight|bias)$', k):
        return 'decode_head.side_adapter.' + k[len('vit_model.'):]
    if k in ('query_embed', 'query_pos_embed'):
        return 'decode_head.side_adapter.' + k
    if m_fuse:
        idx = fusion_targets.index(int(m_fuse.group(1)))
        return (f'decode_head.side_adapter.fusion_layers.{idx}.{m_fuse.group(2)}.'
                f'{m_fuse.group(3)}')
    if re.match(r'mask_decoder\.(query_mlp|pix_mlp)\.layers\.\d+\.', k):
        return 'decode_head.' + k
    if re.match(r'mask_decoder\.(attn_mlp\.layers\.\d+|bias_scaling)\.', k):
        return 'decode_head.bias_decoder.' + k[len('mask_decoder.'):]
    return None


def convert(state: Dict[str, torch.Tensor]) -> Tuple['OrderedDict[str, torch.Tensor]',
                                                      List[int]]:
    """Official SAN state dict -> (our state dict, side blocks receiving fusion)."""
    split = 1 + max((int(m.group(1)) for k in state
                     for m in [re.match(r'clip_visual_extractor\.resblocks\.(\d+)\.', k)] if m),
                    default=-1)
    if split == 0:
        raise KeyError('no clip_visual_extractor.resblocks.* keys: not an official SAN '
                       'checkpoint')
    fusion_targets = sorted({int(m.group(1)) for k in state
                             for m in [re.match(r'side_adapter_network\.fusion_layers\.layer_'
                                                r'(\d+)\.', k)] if m})
    out, unknown = OrderedDict(), []
    for key, value in state.items():
        new = None
        if key in _DROPPED:
            continue
        if key.startswith('clip_visual_extractor.'):
            k = key[len('clip_visual_extractor.'):]
            if k.startswith('resblocks.'):
                new = 'backbone.visual.transformer.' + k
            elif k in _VISUAL_TOP:
                new = 'backbone.visual.' + k
        elif key.startswith('clip_rec_head.'):
            k = key[len('clip_rec_head.'):]
            m = re.match(r'resblocks\.(\d+)\.(.+)', k)
            if m:
                new = (f'backbone.visual.transformer.resblocks.{split + int(m.group(1))}.'
                       f'{m.group(2)}')
            elif k in ('ln_post.weight', 'ln_post.bias', 'proj'):
                new = 'backbone.visual.' + k
        elif key.startswith('ov_classifier.'):
            k = key[len('ov_classifier.'):]
            if k.startswith('transformer.resblocks.') or k in _TEXT_TOP:
                new = 'text_encoder.' + k
            elif k in ('bg_embed', 'logit_scale'):
                new = 'decode_head.' + k
        elif key.startswith('side_adapter_network.'):
            new = _side_adapter_key(key[len('side_adapter_network.'):], fusion_targets)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise KeyError(f'{len(unknown)} keys not recognised as official SAN parameters: '
                       f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')
    _check_complete(out)
    return out, fusion_targets


def main(argv=None) -> int:
    def convert_with_note(state, args):
        out, fusion_targets = convert(state)
        return out, f'side adapter fusion_index={tuple(fusion_targets)}'

    return run_converter('san2ovseg',
                         'Convert an official SAN (MendelXu/SAN) checkpoint to mmseg-ovseg SAN.',
                         'official SAN checkpoint (.pth, detectron2 "model")', convert_with_note,
                         argv)


if __name__ == '__main__':
    sys.exit(main())
