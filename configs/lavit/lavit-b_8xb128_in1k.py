# LaViT-B on ImageNet-1k: the LaViT-T recipe with the B backbone, drop path 0.3 and grad-norm
# clipping at 1.0 (the PVTv2-b3 classification config, the skeleton LaViT-B is built on).
_base_ = './lavit-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='b', drop_path_rate=0.3))

optim_wrapper = dict(clip_grad=dict(max_norm=1.0))
