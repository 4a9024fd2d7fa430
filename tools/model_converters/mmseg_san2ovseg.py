"""Convert an mmsegmentation 1.x SAN checkpoint to mmseg-ovseg's ``SAN``.

Usage::

    python tools/model_converters/mmseg_san2ovseg.py SRC DST \
        [--config configs/san_vitb16_coco-stuff.py]

``--config`` builds the config's model (no weight files read) and loads the result into it
strictly first; keys that do not fit are listed in one error and DST is not written.

``SRC`` is a checkpoint of mmseg's ``MultimodalEncoderDecoder`` with ``VisionTransformer``
(image encoder, layers ``0..split-1``), ``CLIPTextEncoder`` and ``SideAdapterCLIPHead``.
Every parameter is converted, including the text tower, the learned background embedding
and the logit scale; mmseg's split CLIP (``image_encoder`` + ``rec_with_attnbias``) becomes one
open_clip tower (``backbone.visual``). A key that is not recognised, or a module whose
parameters are incomplete, is an error. ``DST`` is written atomically.
"""
import re
import sys
from collections import OrderedDict
from typing import Dict

import torch

from mmseg_ovseg.utils.converter_cli import run_converter

# mmcv transformer-layer names -> open_clip ResidualAttentionBlock names.
_MMCV_VIT_LAYER = {  # mmseg VisionTransformer's TransformerEncoderLayer
    'ln1': 'ln_1', 'ln2': 'ln_2', 'attn.attn.in_proj_weight': 'attn.in_proj_weight',
    'attn.attn.in_proj_bias': 'attn.in_proj_bias', 'attn.attn.out_proj': 'attn.out_proj',
    'ffn.layers.0.0': 'mlp.c_fc', 'ffn.layers.1': 'mlp.c_proj'}
_MMCV_BASE_LAYER = {  # mmcv BaseTransformerLayer (norm, self_attn, norm, ffn)
    'norms.0': 'ln_1', 'norms.1': 'ln_2',
    'attentions.0.attn.in_proj_weight': 'attn.in_proj_weight',
    'attentions.0.attn.in_proj_bias': 'attn.in_proj_bias',
    'attentions.0.attn.out_proj': 'attn.out_proj',
    'ffns.0.layers.0.0': 'mlp.c_fc', 'ffns.0.layers.1': 'mlp.c_proj'}
_SIDE_LAYER = {  # mmseg side-adapter layer -> our timm-style SideAdapterBlock
    'ln1': 'norm1', 'ln2': 'norm2', 'attn.attn.in_proj_weight': 'attn.qkv.weight',
    'attn.attn.in_proj_bias': 'attn.qkv.bias', 'attn.attn.out_proj': 'attn.proj',
    'ffn.layers.0.0': 'mlp.fc1', 'ffn.layers.1': 'mlp.fc2'}
_CLIP_BLOCK_KEYS = ('ln_1.weight', 'ln_1.bias', 'attn.in_proj_weight', 'attn.in_proj_bias',
                    'attn.out_proj.weight', 'attn.out_proj.bias', 'ln_2.weight', 'ln_2.bias',
                    'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias')
_SIDE_BLOCK_KEYS = ('norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias',
                    'attn.proj.weight', 'attn.proj.bias', 'norm2.weight', 'norm2.bias',
                    'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias')


def _map_layer(rest: str, table: Dict[str, str]) -> str:
    for src, dst in table.items():
        if rest == src or rest.startswith(src + '.'):
            return dst + rest[len(src):]
    raise KeyError(rest)


def _image_encoder_key(k: str, value, num_img_layers: int):
    """``image_encoder.<k>`` (mmseg's ViT up to the split) -> our CLIP visual keys."""
    m = re.match(r'layers\.(\d+)\.(.+)', k)
    if m:
        return (f'backbone.visual.transformer.resblocks.{m.group(1)}.'
                + _map_layer(m.group(2), _MMCV_VIT_LAYER)), value
    if k == 'cls_token':
        return 'backbone.visual.class_embedding', value.reshape(-1)
    if k == 'pos_embed':
        return 'backbone.visual.positional_embedding', value[0]
    if k == 'patch_embed.projection.weight':
        return 'backbone.visual.conv1.weight', value
    if k.startswith('ln_pre.'):
        return 'backbone.visual.' + k, value
    return None, value


def _rec_key(k: str, value, num_img_layers: int):
    """``decode_head.rec_with_attnbias.<k>`` (the CLIP blocks after the split) -> our CLIP
    visual blocks ``num_img_layers + i``, ``ln_post`` and ``proj``."""
    m = re.match(r'layers\.(\d+)\.(.+)', k)
    if m:
        idx = num_img_layers + int(m.group(1))
        return (f'backbone.visual.transformer.resblocks.{idx}.'
                + _map_layer(m.group(2), _MMCV_BASE_LAYER)), value
    if k.startswith('ln_post.'):
        return 'backbone.visual.' + k, value
    if k == 'proj.weight':  # nn.Linear (out, in) -> open_clip (in, out)
        return 'backbone.visual.proj', value.t().contiguous()
    return None, value


def _side_adapter_key(k: str, value, num_img_layers: int):
    """``decode_head.side_adapter_network.<k>`` -> our side adapter and mask decoder."""
    m = re.match(r'encode_layers\.(\d+)\.(.+)', k)
    m_fuse = re.match(r'conv_clips\.(\d+)\.(0|1\.conv)\.(weight|bias)$', k)
    new = None
    if m:
        new = (f'decode_head.side_adapter.blocks.{m.group(1)}.'
               + _map_layer(m.group(2), _SIDE_LAYER))
    elif m_fuse:
        sub = '0' if m_fuse.group(2) == '0' else '1'
        new = (f'decode_head.side_adapter.fusion_layers.{m_fuse.group(1)}.{sub}.'
               f'{m_fuse.group(3)}')
    elif k.startswith('patch_embed.projection.'):
        new = 'decode_head.side_adapter.patch_embed.' + k.split('.')[-1]
    elif k in ('pos_embed', 'query_embed', 'query_pos_embed'):
        new = 'decode_head.side_adapter.' + k
    elif re.match(r'mask_decoder\.(query_mlp|pix_mlp)\.layers\.\d+\.', k):
        new = 'decode_head.' + k
    elif re.match(r'mask_decoder\.(attn_mlp\.layers\.\d+|bias_scaling)\.', k):
        new = 'decode_head.bias_decoder.' + k[len('mask_decoder.'):]
    return new, value


def _text_encoder_key(k: str, value, num_img_layers: int):
    """``text_encoder.<k>`` -> our text encoder (``bg_embed``, ``logit_scale``: the head)."""
    m = re.match(r'transformer\.(\d+)\.(.+)', k)
    if m:
        return (f'text_encoder.transformer.resblocks.{m.group(1)}.'
                + _map_layer(m.group(2), _MMCV_BASE_LAYER)), value
    if k in ('token_embedding.weight', 'positional_embedding', 'text_projection') \
            or k.startswith('ln_final.'):
        return 'text_encoder.' + k, value
    if k in ('bg_embed', 'logit_scale'):
        return 'decode_head.' + k, value
    return None, value


#: source prefix -> ``fn(key without the prefix, value, num_img_layers) -> (new key or None,
#: value)``
_PREFIXES = (
    ('image_encoder.', _image_encoder_key),
    ('decode_head.rec_with_attnbias.', _rec_key),
    ('decode_head.side_adapter_network.', _side_adapter_key),
    ('text_encoder.', _text_encoder_key),
)


def convert(state: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """mmseg SAN state dict -> mmseg-ovseg SAN state dict."""
    num_img_layers = 1 + max(
        (int(m.group(1)) for k in state
         for m in [re.match(r'image_encoder\.layers\.(\d+)\.', k)] if m), default=-1)
    if num_img_layers == 0:
        raise KeyError('no image_encoder.layers.* keys: not an mmseg SAN checkpoint')
    out, unknown = OrderedDict(), []
    for key, value in state.items():
        new = None
        for prefix, fn in _PREFIXES:
            if key.startswith(prefix):
                try:
                    new, value = fn(key[len(prefix):], value, num_img_layers)
                except KeyError:
                    new = None
                break
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise KeyError(f'{len(unknown)} keys not recognised as mmseg SAN parameters: '
                       f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')
    _check_complete(out)
    return out


def _check_complete(out: Dict[str, torch.Tensor]) -> None:
    """Every converted module must be complete (a truncated checkpoint is an error)."""
    required = ['backbone.visual.conv1.weight', 'backbone.visual.class_embedding',
                'backbone.visual.positional_embedding', 'backbone.visual.ln_pre.weight',
                'backbone.visual.ln_post.weight', 'backbone.visual.proj',
                'text_encoder.token_embedding.weight', 'text_encoder.positional_embedding',
                'text_encoder.text_projection', 'text_encoder.ln_final.weight',
                'decode_head.bg_embed', 'decode_head.logit_scale',
                'decode_head.side_adapter.patch_embed.weight',
                'decode_head.side_adapter.pos_embed', 'decode_head.side_adapter.query_embed',
                'decode_head.side_adapter.query_pos_embed',
                'decode_head.bias_decoder.bias_scaling.weight']

    def indices(prefix):
        pat = re.compile(re.escape(prefix) + r'(\d+)\.')
        found = {int(m.group(1)) for k in out for m in [pat.match(k)] if m}
        return range(max(found) + 1) if found else range(0)

    for prefix, keys in (('backbone.visual.transformer.resblocks.', _CLIP_BLOCK_KEYS),
                         ('text_encoder.transformer.resblocks.', _CLIP_BLOCK_KEYS),
                         ('decode_head.side_adapter.blocks.', _SIDE_BLOCK_KEYS)):
        blocks = indices(prefix)
        if not blocks:
            required.append(prefix + '0.' + keys[0])
        required += [f'{prefix}{i}.{k}' for i in blocks for k in keys]
    for prefix in ('decode_head.mask_decoder.query_mlp.layers.',
                   'decode_head.mask_decoder.pix_mlp.layers.',
                   'decode_head.bias_decoder.attn_mlp.layers.'):
        layers = indices(prefix)
        if not layers:
            required.append(prefix + '0.weight')
        required += [f'{prefix}{i}.{k}' for i in layers for k in ('weight', 'bias')]
    fusions = indices('decode_head.side_adapter.fusion_layers.')
    required += [f'decode_head.side_adapter.fusion_layers.{i}.{j}.{k}'
                 for i in fusions for j in (0, 1) for k in ('weight', 'bias')]
    missing = [k for k in required if k not in out]
    if missing:
        raise KeyError(f'checkpoint is incomplete, {len(missing)} parameters missing: '
                       f'{missing[:10]}{" ..." if len(missing) > 10 else ""}')


def main(argv=None) -> int:
    return run_converter('mmseg_san2ovseg',
                         'Convert an mmsegmentation SAN checkpoint to mmseg-ovseg SAN.',
                         'mmseg SAN checkpoint (.pth)', lambda state, args: convert(state), argv)


if __name__ == '__main__':
    sys.exit(main())
