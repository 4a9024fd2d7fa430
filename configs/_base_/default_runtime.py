# Runtime shared by every config: mmseg's defaults plus the import of this plugin, which
# registers its models, datasets and metrics into mmseg's registries.
default_scope = 'mmseg'
custom_imports = dict(imports=['mmseg_ovseg'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

tta_model = dict(type='SegTTAModel')

# Hooks of every config (a config overrides single entries, e.g. the checkpoint interval;
# max_keep_ckpts unset: all checkpoints are kept unless the config limits them).
# SafeCheckpointHook (mmseg_ovseg/engine/checkpoint_hook.py) is mmengine's CheckpointHook with
# kill-proof saving (temporary file, fsync, atomic rename, then last_checkpoint, then old files
# removed) and exact resume (random states saved and restored). FiniteLossHook stops training
# on a NaN/inf loss, naming the iteration and the loss terms ('warn' to train on, None: off).
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='SafeCheckpointHook', by_epoch=False, interval=2000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='OVSegVisualizationHook'),  # labels: the model's vocabulary
    check_finite_loss=dict(type='FiniteLossHook', action='raise', interval=1))
