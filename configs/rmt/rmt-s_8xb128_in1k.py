# RMT-S on ImageNet-1k from scratch: 300 epochs, AdamW lr 1e-3 for a global
# batch of 1024 (8 GPUs x 128; the official rule lr = 5e-4 x batch / 512; `--auto-scale-lr`
# rescales it), wd 0.05, 5 warm-up epochs then cosine to 1e-5, RandAugment m9-mstd0.5, Mixup 0.8 /
# CutMix 1.0, RandomErasing 0.25, label smoothing 0.1, repeated augmentation, drop path 0.15,
# EMA of the weights (evaluated instead of the raw weights).
# The T and B configs inherit this file (L inherits B).
_base_ = [
    '../_base_/datasets/imagenet_bs128_randaug_224.py',
    '../_base_/schedules/imagenet_adamw_300e.py',
    '../_base_/default_runtime_cls.py',
]

model = dict(
    type='ImageClassifier',
    # the official head: per-token Linear(512 -> 1024), BN, Swish, global average, Linear
    backbone=dict(
        type='mmvit_ext.RMT', arch='s', drop_path_rate=0.15, out_indices=(3, )),
    neck=dict(
        type='mmvit_ext.NormPoolNeck',
        in_channels=512,
        proj_channels=1024,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='Swish')),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    # the official init: trunc-normal(0.02) Linear layers with zero bias, unit LayerNorms
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
)

# DeiT's repeated augmentation (3 augmented copies of each sampled image), on in the official run
train_dataloader = dict(sampler=dict(type='RepeatAugSampler', shuffle=True))

# timm ModelEma with decay 0.99996 ** (batch / 512) = 0.99992 at batch 1024, updated every
# iteration, buffers (BN statistics) averaged too; mmengine momentum = 1 - decay.
custom_hooks = [
    dict(type='EMAHook', momentum=8e-5, update_buffers=True, priority='ABOVE_NORMAL')
]
