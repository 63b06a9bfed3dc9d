# RMT-T variant of mask-rcnn_rmt-s_fpn_1x_coco.py
# (same task recipe), with the T backbone, drop path 0.1 (same channels as S).
_base_ = './mask-rcnn_rmt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/rmt-t_in1k.pth')))
