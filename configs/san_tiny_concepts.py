# SAN on the generated zero-shot benchmark (configs/_base_/datasets/concepts.py) with the
# pretrained in-package tiny CLIP ('ovseg-tiny-clip', docs/tiny_clip.md), frozen as in the
# paper (only its position embedding trains). Inductive zero-shot protocol: the model is
# trained with the 46 seen class names and labels (ZeroShotVocabularyHook switches the
# vocabulary; unseen pixels are ignored by ZeroShotLabelMapping) and evaluated on all 55
# classes. The CLIP tower sees the 128 px image at 64 px (clip_scale 0.5: the 8x8 grid it was
# pretrained on); its blocks 1-3 run the SLS tokens with the side adapter's bias (split_layer 1:
# measured better than SAN's "last quarter", split_layer 3 -- docs/open_vocab_record.md), and the
# side adapter fuses the CLIP embedding and block 1's output.
# Results and commands: docs/open_vocab.md.
_base_ = [
    '_base_/datasets/concepts.py', '_base_/default_runtime.py',
    '_base_/schedules/schedule_synthetic.py'
]

crop_size = (128, 128)
zero_shot_split = 'concepts'
clip_model = 'ovseg-tiny-clip'
clip_pretrained = 'work_dirs/tiny_clip/ovseg-tiny-clip.pt'

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[122.771, 116.746, 104.094],
    std=[68.501, 66.632, 70.323],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size,
    test_cfg=dict(size_divisor=16))
model = dict(
    type='SAN',
    data_preprocessor=data_preprocessor,
    vocabulary='concepts',  # all 55 names; the hook trains on the seen ones
    templates='single',
    clip_scale=0.5,
    fusion_layers=(0, 1),
    split_layer=1,
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        frozen=True,
        frozen_exclude=('positional_embedding', )),
    text_encoder=dict(
        type='OVCLIPTextEncoder', clip_model=clip_model, pretrained=clip_pretrained),
    decode_head=dict(
        type='SANHead',
        # width 64: 96 wins with the region-sls CLIP (hIoU 1,200 it 35.9 / 36.5 -> 40.1 / 36.9)
        # but not with the default 'demo' CLIP (400 it, seeds 0 / 1: 25.0 / 25.3 at 64, 23.2 /
        # 26.0 at 96, and the demo picture loses the blue circle on seed 0):
        # docs/open_vocab_record.md
        side_adapter=dict(
            embed_dims=64, depth=4, num_heads=2, patch_size=8, num_queries=16,
            pos_grid=(16, 16), clip_channels=64, fusion_index=(0, 2)),
        mask_decoder=dict(embed_channels=64, mlp_channels=64, num_mlp_layers=3),
        bias_decoder=dict(num_heads=4, embed_channels=64, mlp_channels=64, num_mlp_layers=3),
        text_channels=64,
        # the tiny CLIP's own learned temperature (exp = 25.88; SAN's 100 is OpenAI CLIP's), of
        # the 'demo' preset checkpoint (docs/tiny_clip.md; 3.2082 for the preset at lr 2e-3,
        # 3.3027 for the earlier 'plain' one)
        logit_scale=3.2532,
        deep_supervision_idxs=(3, ),
        loss_decode=dict(type='MaskClassificationLoss', num_points=1024)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# lr 2e-3 (was 5e-4): measured better on 2 seeds at 400 and 1,200 iterations with the
# region-sls tiny CLIP (hIoU 20.6 / 14.9 -> 29.5 / 23.2 at 400, 30.0 / 25.6 -> 35.9 / 36.5 at
# 1,200; 1e-3 and 4e-3 were worse than 2e-3 at 400): docs/open_vocab_record.md, "SAN recipe".
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=1.0))
# 800 iterations (was 400): with the lr 3e-3 'demo' CLIP the demo picture names all three
# unseen objects on seeds 0 and 1 at 800, not at 400 (seed 0 lost the blue circle)
max_iters = 800
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=50, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
custom_hooks = [dict(type='ZeroShotVocabularyHook', split=zero_shot_split)]
randomness = dict(seed=0)
