# RetinaNet + FPN with a Pale-T backbone, COCO 1x (12 epochs, 1333x800), AdamW lr 1e-4 with
# wd 1e-4 (the project's RetinaNet protocol), batch 16. Backbone from the ImageNet-1k classifier.
_base_ = [
    '../_base_/models/retinanet_fpn.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/coco_1x_adamw.py',
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

optim_wrapper = dict(optimizer=dict(weight_decay=1e-4))
