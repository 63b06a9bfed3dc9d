# LaViT-B variant of upernet_lavit-t_8xb2-160k_ade20k-512x512.py (same task recipe;
# drop path 0.1 like every PVTv2 dense backbone).
_base_ = './upernet_lavit-t_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b',
        init_cfg=dict(checkpoint='checkpoints/lavit-b_in1k.pth')))
