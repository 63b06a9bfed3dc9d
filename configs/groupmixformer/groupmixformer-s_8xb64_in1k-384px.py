# GroupMixFormer-S fine-tuned at 384x384 from the 224 checkpoint (paper):
# 30 epochs, AdamW lr 2e-6 (global batch 512 = 8 GPUs x 64), 5 linear warm-up epochs then
# cosine, weight decay 1e-8, grad-norm clip 5.0, same augmentation as at 224.
# The whole 224 classifier is loaded (backbone, `norm4` neck BN and head), as the official
# `--pretrained` fine-tuning does; test as the official default TEST.CROP=True.
# groupmixformer-l_8xb64_in1k-384px.py inherits this file.
_base_ = [
    '../_base_/datasets/imagenet_bs64_randaug_384.py',
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
# every weight of the 224 classifier (a converted official checkpoint or our training); a
# `--resume` run continues from its work dir instead
load_from = 'checkpoints/groupmixformer-s_in1k.pth'

# official TEST.CROP=True: short side to int(256 / 224 * 384) = 438 (bicubic), centre crop 384
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=438,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=384),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=2e-6, weight_decay=1e-8), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-7,
        by_epoch=True,
        begin=5,
        end=30,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=30)
auto_scale_lr = dict(base_batch_size=512)
