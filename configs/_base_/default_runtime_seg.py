# Runtime for mmseg (ADE20K semantic segmentation) configs: mmseg 1.x defaults (iteration based),
# registries resolved in the `mmseg` scope, mmvit_ext imported for `type='mmvit_ext.X'`.
default_scope = 'mmseg'
custom_imports = dict(imports=['mmvit_ext'], allow_failed_imports=False)

# mmseg keeps these hooks in its schedule files; here they are the runtime defaults and the
# schedules under _base_/schedules/ only override the checkpoint interval.
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

env_cfg = dict(
    # mmseg default: fixed 512x512 training crops make cudnn autotuning worthwhile
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)

log_level = 'INFO'
load_from = None
resume = False

# used by `tools/test.py --tta` together with the dataset base's `tta_pipeline`
tta_model = dict(type='SegTTAModel')
