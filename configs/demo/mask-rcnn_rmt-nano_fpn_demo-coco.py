# Demo: Mask R-CNN with a nano RMT backbone on the generated COCO-format shape set, evaluated
# with the COCO bbox and segm mAP; about 3 CPU minutes for bbox and segm mAP@50 above 0.9. As in
# the real recipes, the backbone can start from the demo classifier
# (configs/demo/rmt-nano_1xb32_demo-cls.py, same nano arch):
#   --cfg-options model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.prefix=backbone.
#                 model.backbone.init_cfg.checkpoint=work_dirs/demo-cls/epoch_8.pth
_base_ = [
    '../_base_/models/mask-rcnn_fpn.py', '../_base_/datasets/demo_coco_instance.py',
    '../_base_/default_runtime_det.py'
]

model = dict(
    backbone=dict(
        type='mmvit_ext.RMT',
        arch=dict(embed_dims=[32, 64, 128, 128], depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4],
                  mlp_ratios=[3, 3, 3, 3], init_values=[2, 2, 2, 2], heads_ranges=[4, 4, 6, 6],
                  decomposed=[True, True, True, False],
                  layer_scales=[False, False, False, False]),
        out_indices=(0, 1, 2, 3),
        # No LayerNorm on the stage outputs (the real det/seg configs have them): with them the
        # heads, trained from scratch here, reached bbox mAP@50 0.03 after 4 epochs; without,
        # 0.98.
        out_norm_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 128], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3)),
    # 128x128 images with at most 3 objects need far fewer proposals and RoIs than COCO
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200), rcnn=dict(max_per_img=20)))

# lr 2e-4 at batch 4 (the usual AdamW 1e-4 at batch 16, doubled for the short schedule) and
# clipping: with 1e-3 the norm-free FPN outputs blew up (|x| ~ 400) and the RoI head collapsed.
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05),
                     paramwise_cfg=dict(norm_decay_mult=0.0),
                     clip_grad=dict(max_norm=10.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=4, val_interval=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=4, max_keep_ckpts=1))
randomness = dict(seed=0)
