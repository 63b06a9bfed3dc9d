# GroupMixFormer-B variant of upernet_groupmixformer-s_8xb2-160k_ade20k-512x512.py
# (same task recipe), with the B backbone, drop path 0.4 and its channels.
_base_ = './upernet_groupmixformer-s_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/groupmixformer-b_in1k.pth')),
    decode_head=dict(in_channels=[200, 240, 320, 480]))  # auxiliary head: 320 as S
