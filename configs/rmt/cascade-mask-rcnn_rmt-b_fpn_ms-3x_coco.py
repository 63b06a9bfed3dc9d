# RMT-B variant of cascade-mask-rcnn_rmt-s_fpn_ms-3x_coco.py
# (same task recipe), with the B backbone, drop path 0.4 and its channels, lr 2e-4.
_base_ = './cascade-mask-rcnn_rmt-s_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/rmt-b_in1k.pth')),
    neck=dict(in_channels=[80, 160, 320, 512]))

optim_wrapper = dict(optimizer=dict(lr=2e-4))
