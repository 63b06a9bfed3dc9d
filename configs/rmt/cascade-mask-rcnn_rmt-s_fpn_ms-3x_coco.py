# Cascade Mask R-CNN + FPN with an RMT-S backbone, COCO 3x (36 epochs, multi-scale),
# batch 16 (8 GPUs x 2). Backbone from the ImageNet-1k classifier
# (converted official weights or our training). The official runs used fp16: add `--amp`.
# The B variant of this task inherits this file.
_base_ = [
    '../_base_/models/cascade-mask-rcnn_fpn.py',
    '../_base_/datasets/coco_instance_ms-3x.py',
    '../_base_/schedules/coco_3x_adamw.py',
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

# AdamW lr 4e-4, wd 0.05, no decay on norm layers (names containing 'norm' and all norm modules)
optim_wrapper = dict(
    optimizer=dict(lr=4e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={'norm': dict(decay_mult=0.0)}))
