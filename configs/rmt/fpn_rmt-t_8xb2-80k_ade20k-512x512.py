# RMT-T variant of fpn_rmt-s_8xb2-80k_ade20k-512x512.py
# (same task recipe), with the T backbone, drop path 0.1 (same channels as S).
_base_ = './fpn_rmt-s_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/rmt-t_in1k.pth')))
