# GroupMixFormer-S + Semantic FPN on ADE20K, 80k iterations, AdamW (PVT protocol; paper).
# The T and B variants of this task inherit this file.
_base_ = [
    '../_base_/models/semantic-fpn.py',
    '../_base_/datasets/ade20k_512x512.py',
    '../_base_/schedules/ade20k_80k_adamw.py',
    '../_base_/default_runtime_seg.py',
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
