# Pale-B on ImageNet-1k: the Pale-T recipe with drop path 0.5.
_base_ = './pale-t_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.5),
    neck=dict(in_channels=1024),
    head=dict(in_channels=1024))
