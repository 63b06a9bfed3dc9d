# UperNet with a Pale-T backbone, ADE20K 160k iterations, crop 512x512, AdamW lr 6e-5 / wd 0.01,
# 1500-iteration linear warm-up then poly, batch 16 (8 GPUs x 2). Backbone from ImageNet-1k.
_base_ = [
    '../_base_/models/upernet.py',
    '../_base_/datasets/ade20k_512x512.py',
    '../_base_/schedules/ade20k_160k_adamw.py',
    '../_base_/default_runtime_seg.py',
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
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
