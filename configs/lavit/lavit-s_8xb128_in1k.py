# LaViT-S on ImageNet-1k: the LaViT-T recipe with the S backbone (drop path 0.1).
_base_ = './lavit-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='s', drop_path_rate=0.1))
