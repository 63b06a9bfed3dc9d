# GroupMixFormer-T on ImageNet-1k from scratch: the recipe of groupmixformer-s_8xb128_in1k.py
# with the T backbone. Stochastic depth 0.1 (paper and released yaml agree).
_base_ = './groupmixformer-s_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='t', drop_path_rate=0.1),
    neck=dict(in_channels=240),
    head=dict(in_channels=240))
