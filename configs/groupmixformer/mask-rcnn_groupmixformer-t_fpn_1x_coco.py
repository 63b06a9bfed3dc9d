# GroupMixFormer-T variant of mask-rcnn_groupmixformer-s_fpn_1x_coco.py
# (same task recipe), with the T backbone, drop path 0.1 and its channels.
_base_ = './mask-rcnn_groupmixformer-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/groupmixformer-t_in1k.pth')),
    neck=dict(in_channels=[80, 160, 200, 240]))
