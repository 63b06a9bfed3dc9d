# LaViT-B variant of fpn_lavit-t_8xb2-80k_ade20k-512x512.py (same task recipe;
# drop path 0.1 like every PVTv2 dense backbone).
_base_ = './fpn_lavit-t_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b',
        init_cfg=dict(checkpoint='checkpoints/lavit-b_in1k.pth')))
