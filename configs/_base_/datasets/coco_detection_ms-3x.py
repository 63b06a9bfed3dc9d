# COCO 2017 object detection with DETR-style multi-scale training ("3x + MS" of Swin/RMT):
# same as coco_detection.py except the train pipeline; test stays single scale 1333x800.
_base_ = './coco_detection.py'

backend_args = None

# short side in {480, 512, ..., 800}, long side at most 1333
multi_scales = [(short, 1333) for short in range(480, 801, 32)]

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    # either a plain multi-scale resize, or resize -> random crop -> multi-scale resize
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(
                    type='RandomChoiceResize',
                    scales=multi_scales,
                    keep_ratio=True),
            ],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 1333), (500, 1333), (600, 1333)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(
                    type='RandomChoiceResize',
                    scales=multi_scales,
                    keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
