# GroupMixFormer-S on ImageNet-1k from scratch, the paper's recipe: 300 epochs, AdamW lr 1e-3
# for a global batch of 1024 (8 GPUs x 128;
# `--auto-scale-lr` rescales it), wd 0.05, 20 linear warm-up epochs then cosine, RandAugment,
# Mixup 0.8 / CutMix 1.0, RandomErasing 0.25, label smoothing 0.1, grad-norm clip 5.0 (official
# code). Stochastic depth 0.2 (paper and released yaml agree).
# The T, M, B and L variants inherit this file.
_base_ = [
    '../_base_/datasets/imagenet_bs128_randaug_224.py',
    '../_base_/schedules/imagenet_adamw_300e.py',
    '../_base_/default_runtime_cls.py',
]

# BN everywhere, synchronised across GPUs as in the official code (single-process runs revert
# it to BN automatically).
norm_cfg = dict(type='SyncBN')
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmvit_ext.GroupMixFormer',
        arch='s',
        drop_path_rate=0.2,
        norm_cfg=norm_cfg,
        out_indices=(3, )),
    # official `norm4`: BN on the last map before global average pooling
    neck=dict(type='mmvit_ext.NormPoolNeck', in_channels=320, norm_cfg=norm_cfg),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=320,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)),
)

optim_wrapper = dict(clip_grad=dict(max_norm=5.0))

# 20 linear warm-up epochs (instead of the base schedule's 5), then cosine to 1e-5
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=20,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=20,
        end=300,
        convert_to_iter_based=True),
]
