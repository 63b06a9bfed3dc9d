# ADE20K 160k-iteration schedule (Swin/RMT UperNet protocol): AdamW 6e-5 / wd 0.01, no decay on
# norm layers, 1500-iteration linear warm-up, then poly (power 1.0) to 0; eval/ckpt every 8k
# (official RMT UperNet runs), the last 3 and the best-mIoU checkpoint kept.
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=160000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # every parameter whose name contains 'norm'
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        begin=1500,
        end=160000,
        by_epoch=False),
]

# iteration-based hooks (mmseg keeps them with the schedule)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='mmvit_ext.SafeCheckpointHook', by_epoch=False, interval=8000,
                    max_keep_ckpts=3, save_best='mIoU'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

# lr is set for 8 GPUs x 2 images; `--auto-scale-lr` rescales it linearly to the actual batch
auto_scale_lr = dict(enable=False, base_batch_size=16)
