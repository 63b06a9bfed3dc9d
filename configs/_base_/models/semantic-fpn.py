# Semantic FPN (mmseg 1.x EncoderDecoder): FPN neck (256 ch, 4 levels) + FPNHead (128 ch),
# ADE20K 150 classes, no auxiliary head. Backbone left empty: family configs set it fully.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,  # ignored label
    size=(512, 512))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    # None: mmseg would otherwise pass `pretrained` into the backbone (init_cfg is used instead)
    pretrained=None,
    backbone=dict(),
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 256, 512],  # placeholder: the backbone's stage channels
        out_channels=256,
        num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],  # the FPN outputs
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
