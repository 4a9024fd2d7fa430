# ZegCLIP (Zhou et al., CVPR 2023), inductive zero-shot on PASCAL VOC 2012 (20 classes, background
# ignored), ViT-B/16, deep prompts (10 tokens x 12 layers), relationship-descriptor decoder,
# focal(100) + dice(1). Unseen: pottedplant, sheep, sofa, train, tvmonitor (split 'voc20').
# Official recipe (ZiqinZhou66/ZegCLIP configs/voc12/vpt_seg_zero_vit-b_512x512_20k_12_10.py):
# 512 crops, AdamW 2e-5 x10 on prompts/head, poly 0.9 with 1500 warm-up iters, 20k iters at
# batch 16 (4 GPUs x 4) on VOC-aug. Paper (Tab. 1): pAcc 94.6, mIoU(S) 91.9, mIoU(U) 77.8,
# hIoU 84.3. The test resize is the official "shortest side 512" (mmseg 0.x min_size).
_base_ = ['_base_/default_runtime.py']

clip_pretrained = 'pretrained/ViT-B-16.pt'  # OpenAI CLIP ViT-B/16 (TorchScript archive)
clip_model = 'ViT-B-16-quickgelu'
vocabulary = 'voc20'
zero_shot_split = 'voc20'
crop_size = (512, 512)
num_prompt_tokens = 10

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # ImageNet statistics, as the official code (not CLIP's)
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='ZegCLIP',
    data_preprocessor=data_preprocessor,
    vocabulary=vocabulary,
    # 'a photo of a {}' without a final period: the official VOC text embeddings
    # (get_embedding.ipynb -> voc12_single.npy) and the official segmentor's default
    templates='zegclip_voc',
    zero_shot_split=zero_shot_split,
    self_training=False,
    seen_calibration=0.1,
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        frozen=True,
        out_indices=(11, ),
        output_dense=True,
        normalize_dense=True,
        num_prompt_tokens=num_prompt_tokens,
        prompt_depth=12,  # the shallow prompt + 11 deep ones (official total_d_layer=11)
        prompt_dropout=0.1,
        # The official config says drop_path_rate=0.1, but its residual blocks never call
        # their DropPath: no stochastic depth was applied.
        drop_path_rate=0.0,
        interpolate_mode='bilinear',  # official position-embedding resize
        pos_grid=(32, 32),  # resized once to the 512 crop's grid, as the official backbone
        # The official forward adds class_embedding twice to the CLS token (as the token and
        # to its position row); folded once into the position row of the loaded CLIP weights.
        fold_class_embedding=True),
    text_encoder=dict(
        type='OVCLIPTextEncoder', clip_model=clip_model, pretrained=clip_pretrained,
        templates='zegclip_voc'),
    decode_head=dict(
        type='ZegCLIPHead',
        in_channels=512,
        channels=512,
        num_layers=3,
        num_heads=8,
        feedforward_channels=2048,
        query_type='rd',
        loss_decode=[
            dict(type='NonExclusiveFocalLoss', alpha=0.25, gamma=2.0, loss_weight=100.0),
            dict(type='NonExclusiveDiceLoss', loss_weight=1.0),
        ]),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))

# ---------------------------------------------------------------- data: VOC 2012 + SBD aug
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
# Keeping only the 20 object classes maps background (0) to 255 through mmseg's label map.
metainfo = dict(classes=(
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
    'tvmonitor'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='ZeroShotLabelMapping', split=zero_shot_split, mode='inductive'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # shortest side 512, no cap on the long side (official Resize(min_size=512))
    dict(type='ResizeShortestEdge', scale=512, max_size=1 << 20),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
voc_train = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
voc_aug = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=4,  # x 4 GPUs = 16
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ConcatDataset', datasets=[voc_train, voc_aug]))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ZeroShotIoUMetric', split=zero_shot_split, iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
max_iters = 20000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # One key applies per parameter (the longest match): prompts and head at 2e-4, text 0.
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=10.0),
        'decode_head': dict(lr_mult=10.0),
        'text_encoder': dict(lr_mult=0.0),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=1500, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # at half and full schedule: the -st configs start from the half-schedule checkpoint
    checkpoint=dict(by_epoch=False, interval=max_iters // 2,
                    save_best='hIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='OVSegVisualizationHook'))  # labels: the model's vocabulary
# The last decoder layer's value/FFN path never reaches the masks (as in the official head).
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Test-time augmentation (tools/test.py --tta; mmseg's SegTTAModel averages the softmax of the
# scores): the test resize at 0.75 / 1 / 1.25 of its short side x horizontal flip, with the
# test pipeline's image and annotation loaders.
tta_pipeline = [
    test_pipeline[0],
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(test_pipeline[1], scale=int(512 * r)) for r in (0.75, 1.0, 1.25)],
            [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0.0, 1.0)],
            [test_pipeline[2]],
            [test_pipeline[3]],
        ])
]
