# Runtime for mmpretrain (image classification) configs: mmpretrain 1.x defaults, registries
# resolved in the `mmpretrain` scope, mmvit_ext imported so `type='mmvit_ext.X'` resolves.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmvit_ext'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # one checkpoint per epoch, keep the last 3 plus the best by the first val metric
    checkpoint=dict(
        type='mmvit_ext.SafeCheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # set enable=True to draw validation predictions
    visualization=dict(type='VisualizationHook', enable=False),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
