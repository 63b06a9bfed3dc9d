# LaViT-T on ImageNet-1k from scratch (PVTv2 protocol): 300 epochs,
# AdamW lr 1e-3 for a global batch of 1024 (8 GPUs x 128; `--auto-scale-lr` rescales it),
# wd 0.05, 5 warm-up epochs then cosine, RandAugment, Mixup 0.8 / CutMix 1.0, RandomErasing 0.25,
# label smoothing 0.1, repeated augmentation. The diagonality-preserving loss (weight 1.0) is
# added to the loss dict as `loss_diag` by AuxLossImageClassifier.
_base_ = [
    '../_base_/datasets/imagenet_bs128_randaug_224.py',
    '../_base_/schedules/imagenet_adamw_300e.py',
    '../_base_/default_runtime_cls.py',
]

model = dict(
    type='mmvit_ext.AuxLossImageClassifier',
    backbone=dict(
        type='mmvit_ext.LaViT',
        arch='t',
        drop_path_rate=0.1,
        dp_loss_weight=1.0,
        out_indices=(3, )),
    # the backbone output is already normalised by the LayerNorm closing stage 4
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)),
)

# DeiT's repeated augmentation (3 augmented copies of each sampled image), on by default in the
# PVT classification code
train_dataloader = dict(sampler=dict(type='RepeatAugSampler', shuffle=True))
