# ZegCLIP's official schedule (configs/voc12/vpt_seg_zero_vit-b_512x512_20k_12_10.py): AdamW
# 2e-5 with x10 on the prompts and the head, the text encoder frozen by lr 0; 1500 linear
# warm-up iterations then poly 0.9 to 1e-6; 20k iterations at total batch 16 (4 GPUs x 4).
# The checkpoint/validation hooks are set by the top-level config (default_runtime.py owns
# default_hooks).
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
auto_scale_lr = dict(enable=False, base_batch_size=16)
