"""Convert an official ZegCLIP checkpoint (mmseg 0.x, ZiqinZhou66/ZegCLIP) to mmseg-ovseg.

Key mapping (official -> ours):

- ``backbone.{conv1,class_embedding,positional_embedding,ln_pre,transformer,ln_post,proj}``
  -> ``backbone.visual.*`` (open_clip names are CLIP's, so only the prefix changes);
- ``backbone.prompt_embeddings (1, N, D)`` and ``backbone.deep_prompt_embeddings (L, N, D)``
  -> one ``backbone.prompt_embeddings (1 + L, N, D)``; ``prompt_proj``/``prompt_norm`` as is;
- ``text_encoder.*`` unchanged (our text encoder keeps CLIP's top-level names);
- ``decode_head.q_proj`` -> ``decode_head.query_proj``; in
  ``decode_head.decoder_1.layers.<i>``: ``multihead_attn.{q,k,v,proj}`` ->
  ``layers.<i>.cross_attn.{q_proj,k_proj,v_proj,out_proj}``, ``norm2``/``norm3`` ->
  ``norm1``/``norm2``, ``linear1``/``linear2`` -> ``ffn.0``/``ffn.3``;
- dropped: the never-used decoder ``self_attn.*`` and ``norm1.*`` (3.15M parameters in
  ViT-B/16) and the loss buffer ``decode_head.loss_decode.*``.

The official ``VPTCLIPVisionTransformer.forward`` adds ``class_embedding`` to the CLS token
twice: once as the token and once more to its position row (``cls_pos = positional_embedding[0]
+ class_embedding``), so every released checkpoint was trained on CLS = ``2 * class_embedding +
positional_embedding[0]``. open_clip (our backbone) adds it once, so the converter folds the
second one into the position embedding: ``positional_embedding[0] += class_embedding`` (exact).
The ZegCLIP configs' ``fold_class_embedding=True`` does the same to plain CLIP weights loaded
through ``pretrained`` only, so a converted checkpoint is never folded twice.

Any other key is an error. The official position embedding is already resized to the 512
crop (``(1 + 32*32, 768)``); it is kept, so the backbone must be built for that grid (the
ZegCLIP configs do: ``pos_grid=(32, 32)``; build them with ``pretrained=None``) -- or pass
``--pos-grid 14 14`` to resize it back to CLIP's 224 grid (bilinear, approximate).

Usage::

    python tools/model_converters/zegclip2ovseg.py official.pth converted.pth
"""
import re
import sys
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch

from mmseg_ovseg.models.layers import resize_pos_embed
from mmseg_ovseg.utils.converter_cli import run_converter

_VISUAL = ('conv1.', 'class_embedding', 'positional_embedding', 'ln_pre.', 'transformer.',
           'ln_post.', 'proj')
_LAYER = re.compile(r'^decode_head\.decoder_1\.layers\.(\d+)\.(.+)$')
_LAYER_MAP = {
    'multihead_attn.q.': 'cross_attn.q_proj.',
    'multihead_attn.k.': 'cross_attn.k_proj.',
    'multihead_attn.v.': 'cross_attn.v_proj.',
    'multihead_attn.proj.': 'cross_attn.out_proj.',
    'norm2.': 'norm1.',
    'norm3.': 'norm2.',
    'linear1.': 'ffn.0.',
    'linear2.': 'ffn.3.',
}
_LAYER_DROP = ('self_attn.', 'norm1.')


def convert_zegclip(state: Dict[str, torch.Tensor],
                    pos_grid: Optional[Sequence[int]] = None) -> 'OrderedDict[str, torch.Tensor]':
    """Map an official ZegCLIP state dict to mmseg-ovseg ``ZegCLIP`` keys (see module doc)."""
    out, unknown = OrderedDict(), []
    shallow = state.get('backbone.prompt_embeddings')
    deep = state.get('backbone.deep_prompt_embeddings')
    for key, value in state.items():
        if key.startswith('backbone.'):
            name = key[len('backbone.'):]
            if name in ('prompt_embeddings', 'deep_prompt_embeddings'):
                continue  # merged below
            if name.startswith(('prompt_proj.', 'prompt_norm.')):
                out[key] = value
            elif name.startswith(_VISUAL):
                if name == 'positional_embedding' and pos_grid is not None:
                    value = resize_pos_embed(value, None, pos_grid, num_prefix=1, mode='bilinear')
                out['backbone.visual.' + name] = value
            else:
                unknown.append(key)
        elif key.startswith('text_encoder.'):
            out[key] = value
        elif key.startswith('decode_head.q_proj.'):
            out[key.replace('decode_head.q_proj.', 'decode_head.query_proj.')] = value
        elif key.startswith('decode_head.loss_decode.'):
            continue
        elif _LAYER.match(key):
            idx, rest = _LAYER.match(key).groups()
            if rest.startswith(_LAYER_DROP):
                continue
            for old, new in _LAYER_MAP.items():
                if rest.startswith(old):
                    out[f'decode_head.layers.{idx}.{new}{rest[len(old):]}'] = value
                    break
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f'{len(unknown)} keys not in the official ZegCLIP layout: {unknown[:10]}')
    cls_key, pos_key = 'backbone.visual.class_embedding', 'backbone.visual.positional_embedding'
    if (cls_key in out) != (pos_key in out):
        raise KeyError('official ZegCLIP checkpoint with only one of backbone.class_embedding '
                       'and backbone.positional_embedding: the CLS fold needs both')
    if cls_key in out:
        cls, pos = out[cls_key], out[pos_key]
        if pos.ndim != 2 or cls.shape != pos.shape[1:]:
            raise ValueError(f'backbone.class_embedding {tuple(cls.shape)} does not fit '
                             f'backbone.positional_embedding {tuple(pos.shape)}')
        pos = pos.clone()
        pos[0] += cls.to(pos.dtype)  # the official CLS token's second class_embedding
        out[pos_key] = pos
    if shallow is not None:
        prompts = shallow if deep is None else torch.cat([shallow, deep], dim=0)
        out['backbone.prompt_embeddings'] = prompts
    elif deep is not None:
        raise KeyError('deep_prompt_embeddings without prompt_embeddings: the reversed deep '
                       'prompts (total_d_layer < 0) are not supported')
    return out


def main(argv=None) -> int:
    def add_arguments(parser):
        parser.add_argument('--pos-grid', type=int, nargs=2, metavar=('H', 'W'),
                            help='resize the position embedding to this patch grid')

    return run_converter('zegclip2ovseg', __doc__.split('\n')[0],
                         'official ZegCLIP checkpoint (.pth)',
                         lambda state, args: convert_zegclip(state, args.pos_grid), argv,
                         add_arguments)


if __name__ == '__main__':
    sys.exit(main())
