"""mmsegmentation 1.2.2's own SAN as a reference for ours: configs, random init, conversion.

Shared by ``tests/test_san_parity.py`` (numerical parity) and ``tools/analysis_tools/benchmark.py
--against-mmseg-san`` (speed side by side). mmseg's ``MultimodalEncoderDecoder`` +
``SideAdapterCLIPHead`` is built from a random state, its state dict is converted with
``tools/model_converters/mmseg_san2ovseg.py`` and loaded into ours through
``OpenVocabInferencer(config, checkpoint, classes=..., templates=...)``.

``tools/`` is not a package: ``sys.path.insert(0, 'tools/analysis_tools')`` and
``import mmseg_san_reference``.
"""
import importlib.util
import os.path as osp
import sys

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

from mmseg.registry import MODELS  # noqa: E402

import mmseg_ovseg  # noqa: E402,F401  (registries)
from mmseg_ovseg.apis import OpenVocabInferencer  # noqa: E402

CLASSES = ['cat', 'dog', 'grass', 'sky', 'person']
TEMPLATES = ['a photo of a {}.']
MEAN = [122.7709, 116.7460, 104.0937]
STD = [68.5005, 66.6322, 70.3232]
OURS_VITB16_CONFIG = osp.join(REPO_ROOT, 'configs', 'san_vitb16_coco-stuff.py')


def _converter():
    path = osp.join(REPO_ROOT, 'tools', 'model_converters', 'mmseg_san2ovseg.py')
    spec = importlib.util.spec_from_file_location('mmseg_san2ovseg', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mmseg_san_cfg(clip_width=768, clip_heads=12, split=9, rec_layers=3, out_indices=(2, 5, 8),
                  text_width=512, text_heads=8, text_layers=12, embed_dim=512, clip_img=224,
                  side_dims=240, side_heads=6, side_layers=8, num_queries=100,
                  deep_sup=(7, ), dec_channels=256, classes=CLASSES):
    """mmseg 1.2.2's SAN model config (configs/_base_/models/san_vit-b16.py), resizable."""
    return dict(
        type='MultimodalEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=MEAN, std=STD,
                               bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size_divisor=32),
        asymetric_input=True,
        encoder_resolution=0.5,
        image_encoder=dict(
            type='VisionTransformer', img_size=(clip_img, clip_img), patch_size=16,
            patch_pad=0, in_channels=3, embed_dims=clip_width, num_layers=split,
            num_heads=clip_heads, mlp_ratio=4, out_origin=True, out_indices=out_indices,
            qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
            with_cls_token=True, output_cls_token=True, patch_bias=False, pre_norm=True,
            norm_cfg=dict(type='LN', eps=1e-5), act_cfg=dict(type='QuickGELU'),
            norm_eval=False, interpolate_mode='bicubic', frozen_exclude=['pos_embed']),
        text_encoder=dict(
            type='CLIPTextEncoder', dataset_name=None, vocabulary=list(classes),
            templates=TEMPLATES, embed_dims=text_width, num_layers=text_layers,
            num_heads=text_heads, mlp_ratio=4, output_dims=embed_dim, cache_feature=True,
            cat_bg=True, norm_cfg=dict(type='LN', eps=1e-5)),
        decode_head=dict(
            type='SideAdapterCLIPHead',
            num_classes=len(classes),
            deep_supervision_idxs=list(deep_sup),
            san_cfg=dict(
                in_channels=3, clip_channels=clip_width, embed_dims=side_dims, patch_size=16,
                patch_bias=True, num_queries=num_queries,
                cfg_encoder=dict(num_encode_layer=side_layers, num_heads=side_heads,
                                 mlp_ratio=4),
                fusion_index=list(range(len(out_indices) + 1)),
                cfg_decoder=dict(num_heads=clip_heads, num_layers=1,
                                 embed_channels=dec_channels, mlp_channels=dec_channels,
                                 num_mlp=3, rescale=True),
                norm_cfg=dict(type='LN', eps=1e-6)),
            maskgen_cfg=dict(
                sos_token_format='cls_token', sos_token_num=num_queries, cross_attn=False,
                num_layers=rec_layers, embed_dims=clip_width, num_heads=clip_heads,
                mlp_ratio=4, qkv_bias=True, out_dims=embed_dim, final_norm=True,
                act_cfg=dict(type='QuickGELU'), norm_cfg=dict(type='LN', eps=1e-5),
                frozen_exclude=[]),
            align_corners=False,
            train_cfg=None),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def build_mmseg_san(cfg, seed=0):
    """Random mmseg SAN. ``model.init_weights()`` raises in RecWithAttnbias without a
    checkpoint (mmseg bug), and the text encoder's positional_embedding/text_projection are
    ``torch.empty``: initialise the parts explicitly."""
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(cfg))  # mmseg's SAN reads its sub-configs by attribute
    model.image_encoder.init_weights()
    model.decode_head.side_adapter_network.init_weights()
    te = model.text_encoder
    width = te.positional_embedding.shape[1]
    nn.init.normal_(te.token_embedding.weight, std=0.02)
    nn.init.normal_(te.positional_embedding, std=0.01)
    nn.init.normal_(te.text_projection, std=width**-0.5)
    nn.init.normal_(te.bg_embed, std=te.bg_embed.shape[1]**-0.5)
    with torch.no_grad():
        te.logit_scale.fill_(torch.log(torch.tensor(100.0)))  # CLIP's trained value
    return model.eval()


def ours_vitb16_cfg():
    """Our ViT-B/16 SAN config without pretrained files (weights come from the conversion)."""
    cfg = Config.fromfile(OURS_VITB16_CONFIG)
    cfg.model.backbone.pretrained = cfg.model.text_encoder.pretrained = None
    return cfg


def tiny_ours_cfg():
    cfg = Config.fromfile(OURS_VITB16_CONFIG)
    clip = dict(embed_dim=32, quick_gelu=True,
                vision_cfg=dict(image_size=64, layers=3, width=64, head_width=32,
                                patch_size=16),
                text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2,
                              layers=1))
    m = cfg.model
    m.fusion_layers, m.split_layer = (0, 1, 2), 2
    m.backbone.clip_model = m.text_encoder.clip_model = clip
    m.backbone.pretrained = m.text_encoder.pretrained = None
    m.decode_head.side_adapter.update(embed_dims=32, depth=4, num_heads=2, num_queries=10,
                                      clip_channels=64, fusion_index=(0, 1, 2))
    m.decode_head.mask_decoder.update(embed_channels=16, mlp_channels=16)
    m.decode_head.bias_decoder.update(num_heads=2, embed_channels=16, mlp_channels=16)
    m.decode_head.text_channels = 32
    m.decode_head.deep_supervision_idxs = (3, )
    return cfg


def tiny_mmseg_san_cfg(classes=CLASSES):
    """mmseg's SAN at the widths of :func:`tiny_ours_cfg`."""
    return mmseg_san_cfg(clip_width=64, clip_heads=2, split=2, rec_layers=1, out_indices=(0, 1),
                         text_width=32, text_heads=2, text_layers=1, embed_dim=32, clip_img=64,
                         side_dims=32, side_heads=2, side_layers=4, num_queries=10,
                         deep_sup=(3, ), dec_channels=16, classes=classes)


def convert_and_load(mmseg_model, ours_cfg, tmp_path, classes=CLASSES):
    """Save mmseg's model, convert it and load ours with the same classes/templates."""
    src, dst = (osp.join(str(tmp_path), name) for name in ('mmseg_san.pth', 'ours_san.pth'))
    torch.save(dict(state_dict=mmseg_model.state_dict()), src)
    assert _converter().main([src, dst]) == 0
    inferencer = OpenVocabInferencer(ours_cfg, dst, classes=list(classes), templates=TEMPLATES)
    return inferencer.model
