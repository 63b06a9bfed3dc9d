# RMT-L variant of mask-rcnn_rmt-s_fpn_ms-3x_coco.py
# (same task recipe), with the L backbone, drop path 0.5 and its channels, lr 2e-4, batch 8.
_base_ = './mask-rcnn_rmt-s_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/rmt-l_in1k.pth')),
    neck=dict(in_channels=[112, 224, 448, 640]))

optim_wrapper = dict(optimizer=dict(lr=2e-4))

# the official RMT-L 3x run used 1 image per GPU with the same lr (8 GPUs -> batch 8)
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(base_batch_size=8)
