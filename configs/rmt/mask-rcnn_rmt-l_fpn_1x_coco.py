# RMT-L variant of mask-rcnn_rmt-s_fpn_1x_coco.py
# (same task recipe), with the L backbone, drop path 0.5 and its channels, lr 2e-4.
_base_ = './mask-rcnn_rmt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/rmt-l_in1k.pth')),
    neck=dict(in_channels=[112, 224, 448, 640]))

optim_wrapper = dict(optimizer=dict(lr=2e-4))
