# LaViT-S variant of retinanet_lavit-t_fpn_1x_coco.py (same task recipe, drop path 0.1).
_base_ = './retinanet_lavit-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/lavit-s_in1k.pth')))
