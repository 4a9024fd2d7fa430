# DenseCLIP (Rao et al., CVPR 2022) ViT-B/16 + Semantic FPN on ADE20K-150, the official recipe
# (raoyongming/DenseCLIP segmentation/configs/denseclip_fpn_vit-b_640x640_80k.py), written as
# the RN50 config (optimizer, schedule, heads, losses, runtime: inherited) with:
# - CLIP ViT-B/16 backbone, drop path 0.1 (linear over the 12 blocks), layers 3/5/7/11 as
#   (B, 768, 40, 40) maps at 640; dense/global embeddings from ln_post + proj (512-d, 1/16);
# - FPNAdapter (the official backbone's fpn1-fpn4: GroupNorm + 4x deconv / 2x deconv /
#   identity / 2x max-pool -> strides 4/8/16/32), applied before the score map is concatenated
#   to level 2: FPN in_channels [768, 768, 768 + 150, 768];
# - context decoder on 512-d CLIP embeddings, text tower of ViT-B/16 (width 512, 12 layers);
# - 640 crops of (2048, 640) resizes, slide test 640 / stride 426.
# Same AdamW lr 1e-4 / wd 1e-4, backbone lr x0.1 (also the adapters, which the official code
# keeps inside its backbone), text encoder x0 (frozen; contexts x1), norm decay x0, 1500
# warm-up iterations + poly 0.9 to 1e-6, 80k iterations, 4 images per GPU x 8 GPUs.
# README (ADE20K val, single / multi-scale): 50.6 / 51.3 mIoU, 105.3M parameters without the
# text tower (this config: 105,273,494 trainable; CLIP's 14x14 position grid is resized
# bilinearly to 40x40 once at construction and trained at 40x40, as the official backbone).
# Weights: CLIP ViT-B/16 (OpenAI `ViT-B-16.pt`) in pretrained/. Official DenseCLIP checkpoints:
# convert with tools/model_converters/denseclip2ovseg.py and test with
#   --cfg-options model.backbone.pretrained=None model.text_encoder.pretrained=None
_base_ = ['./denseclip_fpn_r50_ade20k-512x512.py']

crop_size = (640, 640)
num_classes = 150
clip_pretrained = 'pretrained/ViT-B-16.pt'
norm_cfg = dict(type='SyncBN', requires_grad=True)
# open_clip's 'ViT-B-16' with QuickGELU (OpenAI weights), written out so that its image size
# can be overridden from the command line (see above).
clip_model = dict(
    embed_dim=512,
    quick_gelu=True,
    vision_cfg=dict(image_size=224, layers=12, width=768, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12))

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        out_indices=(3, 5, 7, 11),
        output_dense=True,  # + dense (B, 512, 40, 40) and global (B, 512) embeddings
        frozen=False,
        drop_path_rate=0.1,
        interpolate_mode='bilinear',  # official position-embedding resize
        pos_grid=(40, 40),  # trained at the 640 crop's grid, as the official backbone
        # the official forward adds class_embedding to the CLS token twice (as the token and
        # to its position row): start from that CLS token (no effect with pretrained=None)
        fold_class_embedding=True),
    adapter=dict(type='FPNAdapter', in_channels=768, rescales=(4, 2, 1, 0.5),
                 norm_cfg=norm_cfg),
    text_encoder=dict(
        _delete_=True,
        type='ContextCLIPTextEncoder',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        num_contexts=8,
        context_length=13,  # [SOT, 8 contexts, <= 3 name tokens, EOT]
        name_suffix='',
        init_std=1.0),
    context_decoder=dict(visual_dim=512),
    score_concat_index=2,
    neck=dict(in_channels=[768, 768, 768 + num_classes, 768]),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))

# ---------------------------------------------------------------- data
# ADE20K as the official ade20k_clip_640.py: resize (2048, 640) x 0.5-2, 640 crops.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 640), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# ---------------------------------------------------------------- schedule
# Inherited; the adapters are part of the official backbone, hence its lr x0.1.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'adapter': dict(lr_mult=0.1)}))
