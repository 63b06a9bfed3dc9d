# RMT-T on ImageNet-1k from scratch: the recipe of rmt-s_8xb128_in1k.py with the T backbone
# and drop path 0.1.
_base_ = './rmt-s_8xb128_in1k.py'

model = dict(backbone=dict(arch='t', drop_path_rate=0.1))
