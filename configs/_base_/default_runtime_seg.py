# Runtime for mmseg (ADE20K semantic segmentation) configs: mmseg 1.x defaults (iteration based),
# registries resolved in the `mmseg` scope, mmvit_ext imported for `type='mmvit_ext.X'`.
default_scope = 'mmseg'
custom_imports = dict(imports=['mmvit_ext'], allow_failed_imports=False)

# `default_hooks` (incl. SegVisualizationHook) live in the schedule files, as in mmseg, because
# the checkpoint interval depends on the schedule and sibling bases may not repeat a key.

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
