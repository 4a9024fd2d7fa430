# DenseCLIP's ViT variant at tiny widths on the synthetic shapes data: a CPU demo of
# configs/denseclip_fpn_vit-b16_ade20k-640x640.py (CLIP ViT with dense/global embeddings,
# FPNAdapter fpn1-fpn4 turning the 1/16 maps into strides 4/8/16/32, score map concatenated to
# the 1/16 level, context decoder, mmseg FPN + FPNHead, auxiliary CE on score_map / tau). The
# CLIP towers are tiny and randomly initialised (nothing is downloaded), so the image tower
# trains at the full lr; the text tower stays frozen as in the paper (only the contexts train).
_base_ = ['./denseclip_tiny_synthetic.py']

num_classes = 8  # 'synthetic' vocabulary
width = 64  # ViT width: every stage map has 64 channels
vit_clip = dict(
    embed_dim=32,
    quick_gelu=True,  # QuickGELU as the official ViT and text encoder (OpenAI CLIP)
    vision_cfg=dict(image_size=128, layers=4, width=width, head_width=32, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))

model = dict(
    backbone=dict(
        _delete_=True, type='CLIPVisionTransformer', clip_model=vit_clip, pretrained=None,
        out_indices=(0, 1, 2, 3), output_dense=True, frozen=False, drop_path_rate=0.1,
        interpolate_mode='bilinear'),
    adapter=dict(type='FPNAdapter', in_channels=width, rescales=(4, 2, 1, 0.5),
                 norm_cfg=dict(type='BN', requires_grad=True)),
    text_encoder=dict(
        _delete_=True, type='ContextCLIPTextEncoder', clip_model=vit_clip, pretrained=None,
        num_contexts=8, context_length=13, name_suffix='', init_std=1.0),
    score_concat_index=2,
    neck=dict(in_channels=[width, width, width + num_classes, width]))
