# COCO 2017 instance segmentation (boxes + masks) for mmdet 3.x: coco_detection.py (single scale
# 1333x800, flip 0.5, 2 images per GPU) with masks loaded and COCO bbox and segm AP on val2017.
_base_ = './coco_detection.py'

backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    # poly2mask=False (mmdet's default is True, a full-image bitmap per object): the polygons
    # are transformed as coordinates and each mask target is rasterised directly at the mask
    # head's 28x28 RoI size, which saves the decoding and resizing of full-size bitmaps (data
    # loading time and memory); COCO's crowd (RLE) objects are ignored in training either way
    dict(
        type='LoadAnnotations', with_bbox=True, with_mask=True,
        poly2mask=False),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    # loaded after Resize: ground truth is compared at the original image size
    dict(
        type='LoadAnnotations', with_bbox=True, with_mask=True,
        poly2mask=False),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
