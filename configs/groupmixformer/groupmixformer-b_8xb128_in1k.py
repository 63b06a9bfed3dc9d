# GroupMixFormer-B on ImageNet-1k from scratch: the recipe of groupmixformer-s_8xb128_in1k.py
# with the B backbone. Stochastic depth 0.4 (paper); the released yaml uses 0.5.
_base_ = './groupmixformer-s_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.4),
    neck=dict(in_channels=480),
    head=dict(in_channels=480))
