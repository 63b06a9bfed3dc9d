# RMT-B variant of mask-rcnn_rmt-s_fpn_1x_coco.py
# (same task recipe), with the B backbone, drop path 0.4 and its channels.
_base_ = './mask-rcnn_rmt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/rmt-b_in1k.pth')),
    neck=dict(in_channels=[80, 160, 320, 512]))
