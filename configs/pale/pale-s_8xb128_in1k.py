# Pale-S on ImageNet-1k: the Pale-T recipe with drop path 0.3.
_base_ = './pale-t_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='s', drop_path_rate=0.3),
    neck=dict(in_channels=768),
    head=dict(in_channels=768))
