# LaViT-B variant of fpn_lavit-t_8xb2-80k_ade20k-512x512.py (same task recipe, drop path 0.3).
_base_ = './fpn_lavit-t_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/lavit-b_in1k.pth')))
