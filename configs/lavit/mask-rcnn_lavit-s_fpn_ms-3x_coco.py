# LaViT-S variant of mask-rcnn_lavit-t_fpn_ms-3x_coco.py (same task recipe, drop path 0.1).
_base_ = './mask-rcnn_lavit-t_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/lavit-s_in1k.pth')))
