# COCO 1x schedule (12 epochs, lr x0.1 after epochs 8, 11) with 500-iteration linear
# warm-up and AdamW lr 1e-4 / wd 0.05, no decay on norm layers (Swin detection protocol).
max_epochs = 12
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # every parameter whose name contains 'norm' (norm layers of backbone, neck and heads)
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))

# lr is set for 8 GPUs x 2 images; enable (or pass --auto-scale-lr) to rescale it linearly
auto_scale_lr = dict(enable=False, base_batch_size=16)
