# LaViT-B variant of cascade-mask-rcnn_lavit-t_fpn_ms-3x_coco.py (same task recipe;
# drop path 0.1 like every PVTv2 dense backbone).
_base_ = './cascade-mask-rcnn_lavit-t_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        init_cfg=dict(checkpoint='checkpoints/lavit-b_in1k.pth')))
