# Mask R-CNN + FPN with a Pale-T backbone, COCO 3x with multi-scale training (36 epochs),
# AdamW lr 1e-4 / wd 0.05, batch 16. Backbone from the ImageNet-1k classifier.
_base_ = [
    '../_base_/models/mask-rcnn_fpn.py',
    '../_base_/datasets/coco_instance_ms-3x.py',
    '../_base_/schedules/coco_3x_adamw.py',
    '../_base_/default_runtime_det.py',
]

model = dict(
    backbone=dict(
        type='mmvit_ext.PaleTransformer',
        arch='t',
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/pale-t_in1k.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512]))
