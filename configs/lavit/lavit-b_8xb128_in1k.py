# LaViT-B on ImageNet-1k: the LaViT-T recipe with the B backbone (drop path 0.3).
_base_ = './lavit-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='b', drop_path_rate=0.3))
