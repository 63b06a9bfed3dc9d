# UperNet with a LaViT-T backbone, ADE20K 160k iterations, crop 512x512, AdamW
# lr 6e-5 / wd 0.01, 1500-iteration warm-up then poly, batch 16 (8 GPUs x 2).
# Backbone from the ImageNet-1k classifier (checkpoints/lavit-t_in1k.pth, see README.md).
_base_ = [
    '../_base_/models/upernet.py',
    '../_base_/datasets/ade20k_512x512.py',
    '../_base_/schedules/ade20k_160k_adamw.py',
    '../_base_/default_runtime_seg.py',
]

model = dict(
    # adds the backbone's loss_diag to the loss dict when dp_loss_weight > 0
    type='mmvit_ext.AuxLossEncoderDecoder',
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
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
