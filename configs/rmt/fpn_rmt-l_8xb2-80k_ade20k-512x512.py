# RMT-L variant of fpn_rmt-s_8xb2-80k_ade20k-512x512.py
# (same task recipe), with the L backbone, drop path 0.5 and its channels.
_base_ = './fpn_rmt-s_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/rmt-l_in1k.pth')),
    neck=dict(in_channels=[112, 224, 448, 640]))
