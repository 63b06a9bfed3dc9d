# RetinaNet + FPN with an RMT-S backbone, COCO 1x (12 epochs, 1333x800 single scale),
# batch 16 (8 GPUs x 2). Backbone from the ImageNet-1k classifier
# (converted official weights or our training). The official runs used fp16: add `--amp`.
# The T, B and L variants of this task inherit this file.
_base_ = [
    '../_base_/models/retinanet_fpn.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/coco_1x_adamw.py',
    '../_base_/default_runtime_det.py',
]

model = dict(
    backbone=dict(
        type='mmvit_ext.RMT',
        arch='s',
        drop_path_rate=0.15,
        # the official det/seg backbone: SyncBN in stem/downsamples, per-stage LayerNorm (eps
        # 1e-5) on the outputs; its BN statistics are updated while fine-tuning (norm_eval=False
        # reproduces that; the official `norm_eval=True` had no effect on SyncBN)
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        out_norm_cfg=dict(type='LN', eps=1e-5),
        norm_eval=False,
        out_indices=(0, 1, 2, 3),
        # the classifier's non-EMA weights, as in the official det/seg runs: convert official
        # files with `rmt_to_mmvit.py --entry model`, take ours (EMA in `state_dict`) with
        # `select_ema_weights.py --weights source` (tools/model_converters/)
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/rmt-s_in1k.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512]))

# AdamW lr 4e-4, wd 1e-4 on every parameter (the official RetinaNet recipe has no paramwise cfg)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=1e-4))
