# SAN ViT-B/16 on COCO-Stuff-164k (171 classes), the paper's recipe (Xu et al., CVPR 2023,
# Sec. 4.1; official MendelXu/SAN config and log):
# - CLIP ViT-B/16 (OpenAI weights, QuickGELU) frozen except its visual position embedding;
#   CLIP sees the image at 0.5x (640 -> 320, 20x20 grid), the side adapter at full scale;
#   CLIP outputs 0/3/6/9 are fused into side blocks 0/1/2/3; blocks 9-11 run the SLS tokens.
# - side adapter: 8 blocks, width 240, 6 heads, patch 16, 100 queries; deep supervision
#   after block 7; Hungarian loss (class 2, mask BCE 5, dice 5, 12544 points, no-object 0.1).
# - 640x640 crops, batch 32 = 8 GPUs x 4 images (or 4 x 8), AdamW lr 1e-4 wd 1e-4 (no decay
#   on position/query embeddings and norms), poly 0.9 over 60k iterations, grad-norm clip
#   0.01 on the whole model, AMP.
# - test: whole image, shortest side 640 (max 2560), padded to a multiple of 32; 14 'vild'
#   prompt templates.
# Local CLIP weights: an OpenAI ViT-B/16 checkpoint (e.g. open_clip's 'openai' ViT-B-16 file)
# at `clip_pretrained`; nothing is downloaded at run time.
_base_ = ['_base_/default_runtime.py']

clip_model = 'ViT-B-16-quickgelu'
clip_pretrained = 'pretrained/ViT-B-16.pt'  # OpenAI CLIP ViT-B/16, see docs/weights.md
crop_size = (640, 640)
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
        pretrained=clip_pretrained,
        templates='vild'),
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

# ------------------------------------------------------------------ data
dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff164k'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomChoiceResize',
        scales=[int(640 * x * 0.1) for x in range(5, 16)],  # shortest edge 320..960
        resize_type='ResizeShortestEdge',
        max_size=2560),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=crop_size, max_size=2560),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,  # x 8 GPUs = 32 (or batch_size=8 x 4 GPUs)
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ------------------------------------------------------------------ schedule
max_iters = 60000
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            'positional_embedding': dict(decay_mult=0.0),  # CLIP's (the one trained part)
            'pos_embed': dict(decay_mult=0.0),
            'query_embed': dict(decay_mult=0.0),
            'query_pos_embed': dict(decay_mult=0.0),
        }),
    loss_scale='dynamic',
    clip_grad=dict(max_norm=0.01, norm_type=2))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(by_epoch=False, interval=10000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='OVSegVisualizationHook'))  # labels: the model's vocabulary
auto_scale_lr = dict(enable=False, base_batch_size=32)

# Test-time augmentation (tools/test.py --tta; mmseg's SegTTAModel averages the softmax of the
# scores): the test resize at 0.75 / 1 / 1.25 of its short side x horizontal flip, with the
# test pipeline's image and annotation loaders.
tta_pipeline = [
    test_pipeline[0],
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(test_pipeline[1], scale=int(crop_size[0] * r)) for r in (0.75, 1.0, 1.25)],
            [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0.0, 1.0)],
            [test_pipeline[2]],
            [test_pipeline[3]],
        ])
]
