# Demo: Semantic FPN with a nano RMT backbone on the generated ADE20K-style shape set; trains
# from scratch on CPU in a few minutes and is evaluated with mIoU.
_base_ = [
    '../_base_/models/semantic-fpn.py', '../_base_/datasets/demo_ade.py',
    '../_base_/default_runtime_seg.py'
]

model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(
        type='mmvit_ext.RMT',
        arch=dict(embed_dims=[32, 64, 128, 128], depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4],
                  mlp_ratios=[3, 3, 3, 3], init_values=[2, 2, 2, 2], heads_ranges=[4, 4, 6, 6],
                  decomposed=[True, True, True, False],
                  layer_scales=[False, False, False, False]),
        out_indices=(0, 1, 2, 3),
        out_norm_cfg=dict(type='LN', eps=1e-5)),
    neck=dict(in_channels=[32, 64, 128, 128], out_channels=64),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, num_classes=4,
                     norm_cfg=dict(type='BN', requires_grad=True)))

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=0,
                        end=400)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400, val_interval=400)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='mmvit_ext.SafeCheckpointHook', by_epoch=False, interval=200,
                    max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
