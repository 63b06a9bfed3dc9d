# RMT-L on ImageNet-1k from scratch: the recipe of rmt-b_8xb128_in1k.py (incl. the decay on
# layer-scale weights) with the L backbone, drop path 0.5 and the official head's per-token
# Linear(640 -> 1024).
_base_ = './rmt-b_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.5),
    neck=dict(in_channels=640))
