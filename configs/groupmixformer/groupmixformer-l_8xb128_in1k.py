# GroupMixFormer-L on ImageNet-1k from scratch: the recipe of groupmixformer-s_8xb128_in1k.py
# with the L backbone (released L config: 71.8M params; the paper reports 70.3M).
# Stochastic depth 0.5 (paper); the released yaml uses 0.1.
_base_ = './groupmixformer-s_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.5),
    neck=dict(in_channels=480),
    head=dict(in_channels=480))
