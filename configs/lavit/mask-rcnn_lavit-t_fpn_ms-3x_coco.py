# Mask R-CNN + FPN with a LaViT-T backbone, COCO 3x with multi-scale training
# (36 epochs), AdamW lr 1e-4 / wd 0.05, no decay on norms (PVTv2 protocol; the base schedule),
# batch 16 (8 GPUs x 2).
# Backbone from the ImageNet-1k classifier (checkpoints/lavit-t_in1k.pth, see README.md).
_base_ = [
    '../_base_/models/mask-rcnn_fpn.py',
    '../_base_/datasets/coco_instance_ms-3x.py',
    '../_base_/schedules/coco_3x_adamw.py',
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
