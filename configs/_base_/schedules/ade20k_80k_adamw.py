# ADE20K 80k-iteration schedule (PVT/RMT Semantic FPN protocol): AdamW 1e-4 / wd 1e-4 on all
# parameters, poly (power 0.9) to 1e-6 without warm-up; eval/ckpt every 4k (official RMT FPN runs),
# the last 3 and the best-mIoU checkpoint kept.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4))

param_scheduler = [
    dict(
        type='PolyLR',
        power=0.9,
        eta_min=1e-6,
        begin=0,
        end=80000,
        by_epoch=False),
]

# iteration-based hooks (mmseg keeps them with the schedule)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='mmvit_ext.SafeCheckpointHook', by_epoch=False, interval=4000,
                    max_keep_ckpts=3, save_best='mIoU'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

# lr is set for 8 GPUs x 2 images; `--auto-scale-lr` rescales it linearly to the actual batch
auto_scale_lr = dict(enable=False, base_batch_size=16)
