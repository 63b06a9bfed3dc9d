# GroupMixFormer-B variant of cascade-mask-rcnn_groupmixformer-s_fpn_ms-3x_coco.py
# (same task recipe), with the B backbone, drop path 0.4 and its channels.
_base_ = './cascade-mask-rcnn_groupmixformer-s_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/groupmixformer-b_in1k.pth')),
    neck=dict(in_channels=[200, 240, 320, 480]))
