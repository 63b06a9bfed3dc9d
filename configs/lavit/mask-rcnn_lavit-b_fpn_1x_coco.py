# LaViT-B variant of mask-rcnn_lavit-t_fpn_1x_coco.py (same task recipe, drop path 0.3).
_base_ = './mask-rcnn_lavit-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/lavit-b_in1k.pth')))
