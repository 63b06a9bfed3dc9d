# GroupMixFormer-S + Mask R-CNN, 1x (12 epochs, steps 8/11; the paper's ablation schedule), AdamW lr 1e-4 wd 0.05, 500-it warm-up.
# Backbone from the ImageNet-1k checkpoint (see README: convert or train it first).
# The T and B variants of this task inherit this file.
_base_ = [
    '../_base_/models/mask-rcnn_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/coco_1x_adamw.py',
    '../_base_/default_runtime_det.py',
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvit_ext.GroupMixFormer',
        arch='s',
        drop_path_rate=0.2,
        norm_cfg=dict(type='SyncBN'),  # official: BN synchronised across GPUs
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/groupmixformer-s_in1k.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[80, 160, 320, 320]))
