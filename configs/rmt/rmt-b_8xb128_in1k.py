# RMT-B on ImageNet-1k from scratch: the recipe of rmt-s_8xb128_in1k.py with the B backbone,
# drop path 0.4, and weight decay on its layer-scale weights.
_base_ = './rmt-s_8xb128_in1k.py'

model = dict(backbone=dict(arch='b', drop_path_rate=0.4))

# The official optimizer decays the (4-D) layer-scale gammas; ours are 1-D LayerScale weights,
# which the base schedule would exclude (flat_decay_mult=0), so decay them explicitly.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '.ls1.weight': dict(decay_mult=1.0),
        '.ls2.weight': dict(decay_mult=1.0),
    }))
