# GroupMixFormer-T variant of upernet_groupmixformer-s_8xb2-160k_ade20k-512x512.py
# (same task recipe), with the T backbone, drop path 0.1 and its channels.
_base_ = './upernet_groupmixformer-s_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/groupmixformer-t_in1k.pth')),
    decode_head=dict(in_channels=[80, 160, 200, 240]),
    auxiliary_head=dict(in_channels=200))
