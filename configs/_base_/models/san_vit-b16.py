# SAN (Xu et al., CVPR 2023) with CLIP ViT-B/16, the official MendelXu/SAN architecture:
# - CLIP ViT-B/16 (OpenAI weights, QuickGELU) frozen except its visual position embedding;
#   CLIP sees the image at 0.5x (640 -> 320, 20x20 grid), the side adapter at full scale;
#   CLIP outputs 0/3/6/9 are fused into side blocks 0/1/2/3; blocks 9-11 run the SLS tokens.
# - side adapter: 8 blocks, width 240, 6 heads, patch 16, 100 queries; deep supervision
#   after block 7; Hungarian loss (class 2, mask BCE 5, dice 5, 12544 points, no-object 0.1).
# - 14 'vild' prompt templates; whole-image inference.
# The vocabulary (here COCO-Stuff's 171 classes) and the data come from the top-level config.
# Local CLIP weights: an OpenAI ViT-B/16 checkpoint (e.g. open_clip's 'openai' ViT-B-16 file)
# at `clip_pretrained`; nothing is downloaded at run time.
clip_model = 'ViT-B-16-quickgelu'
clip_pretrained = 'pretrained/ViT-B-16.pt'  # OpenAI CLIP ViT-B/16, see docs/weights.md
num_queries = 100

data_preprocessor = dict(
    type='SegDataPreProcessor',
    # CLIP's mean/std x 255, RGB
    mean=[122.7709, 116.7460, 104.0937],
    std=[68.5005, 66.6322, 70.3232],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=640,
    test_cfg=dict(size_divisor=32))

model = dict(
    type='SAN',
    data_preprocessor=data_preprocessor,
    vocabulary='coco_stuff171',
    templates='vild',
    clip_scale=0.5,
    fusion_layers=(0, 3, 6, 9),
    split_layer=9,
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        frozen=True,
        frozen_exclude=('positional_embedding', ),
        pad_to_patch=True),
    text_encoder=dict(
        type='OVCLIPTextEncoder',
        clip_model=clip_model,
        pretrained=clip_pretrained),
    decode_head=dict(
        type='SANHead',
        side_adapter=dict(
            embed_dims=240,
            depth=8,
            num_heads=6,
            mlp_ratio=4,
            patch_size=16,
            num_queries=num_queries,
            pos_grid=(40, 40),
            clip_channels=768,
            fusion_index=(0, 1, 2, 3),
            norm_eps=1e-6),
        mask_decoder=dict(embed_channels=256, mlp_channels=256, num_mlp_layers=3),
        bias_decoder=dict(
            num_heads=12, embed_channels=256, mlp_channels=256, num_mlp_layers=3,
            rescale=True),
        text_channels=512,
        deep_supervision_idxs=(7, ),
        align_corners=False,
        loss_decode=dict(
            type='MaskClassificationLoss',
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            loss_cls_weight=2.0,
            no_object_weight=0.1,
            loss_mask=dict(
                type='CrossEntropyLoss', use_sigmoid=True, loss_weight=5.0,
                loss_name='loss_mask_ce'),
            loss_dice=dict(
                type='DiceLoss', use_sigmoid=True, activate=True, naive_dice=True, eps=1.0,
                ignore_index=None, loss_weight=5.0, loss_name='loss_mask_dice'),
            assigner=dict(
                type='HungarianAssigner',
                match_costs=[
                    dict(type='ClassificationCost', weight=2.0),
                    dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0),
                ]))),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
