# Pale-B variant of cascade-mask-rcnn_pale-t_fpn_ms-3x_coco.py
# (same task recipe), with the Pale-B backbone, drop path 0.4 and its channels.
_base_ = './cascade-mask-rcnn_pale-t_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/pale-b_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
