# Pale-S variant of retinanet_pale-t_fpn_1x_coco.py
# (same task recipe), with the Pale-S backbone, drop path 0.3 and its channels.
_base_ = './retinanet_pale-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/pale-s_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
