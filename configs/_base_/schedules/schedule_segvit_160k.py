# SegViT's official ADE20K schedule (zbwxp/SegVit configs/segvit/
# segvit_vit-l_jax_640x640_160k_ade20k.py): AdamW lr 2e-5, weight decay 0.01, head lr x10, no
# decay on norms ('norm'/'ln'), grad clip 35; linear warm-up 1500 iterations (from 1e-6) on a
# poly (power 1.0) to 0 over 160k iterations; reference total batch 8 (4 GPUs x 2).
# The checkpoint/visualization hooks are set by the top-level configs (default_runtime.py owns
# default_hooks).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.0),
        'ln': dict(decay_mult=0.0),
        'head': dict(lr_mult=10.0)}),
    clip_grad=dict(max_norm=35, norm_type=2))
max_iters = 160000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    # overlapping schedulers multiply: warm-up factor x poly over all iterations (mmcv 1.x's
    # poly with linear warm-up)
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# Reference total batch (4 GPUs x 2); enable with --auto-scale-lr on another GPU count.
auto_scale_lr = dict(enable=False, base_batch_size=8)
