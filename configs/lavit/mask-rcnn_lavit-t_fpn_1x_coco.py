# Mask R-CNN + FPN with a LaViT-T backbone, COCO 1x (12 epochs, 1333x800 single scale),
# AdamW lr 2e-4 / wd 1e-4 on every parameter (PVTv2 protocol), batch 16 (8 GPUs x 2).
# Backbone from the ImageNet-1k classifier (checkpoints/lavit-t_in1k.pth, see README.md).
_base_ = [
    '../_base_/models/mask-rcnn_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/coco_1x_adamw.py',
    '../_base_/default_runtime_det.py',
]

model = dict(
    # adds the backbone's loss_diag to the loss dict when dp_loss_weight > 0
    type='mmvit_ext.AuxLossMaskRCNN',
    backbone=dict(
        type='mmvit_ext.LaViT',
        arch='t',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # diagonality-preserving loss off by default for dense tasks; switch
        # it on with `--cfg-options model.backbone.dp_loss_weight=1.0`
        dp_loss_weight=0.0,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/lavit-t_in1k.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]))

# the PVTv2 1x optimizer: no paramwise rules (norms decayed too)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))
