# GroupMixFormer-M on ImageNet-1k from scratch: the recipe of groupmixformer-s_8xb128_in1k.py
# with the M backbone. Stochastic depth 0.0 (paper); the released yaml uses 0.1.
_base_ = './groupmixformer-s_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='m', drop_path_rate=0.0),
    neck=dict(in_channels=160),
    head=dict(in_channels=160))
