# ImageNet-1k at 224 with the DeiT/Swin recipe (RandAugment m9-mstd0.5, RandomErasing 0.25,
# Mixup 0.8 + CutMix 1.0); eval: resize short side 256 + center crop 224. 128 images per GPU.
dataset_type = 'ImageNet'
data_root = 'data/imagenet'

data_preprocessor = dict(
    num_classes=1000,  # needed to turn labels into one-hot scores for Mixup/CutMix
    # RGB normalisation (images are loaded BGR and converted)
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
    # one of the two is drawn per batch (timm: mixup/cutmix switch prob 0.5)
    batch_augments=dict(
        augments=[dict(type='Mixup', alpha=0.8),
                  dict(type='CutMix', alpha=1.0)]),
)

# loaded images are BGR, so fills use the BGR-ordered statistics
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # timm `rand-m9-mstd0.5-inc1`
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(
            pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    # 'rand' with BGR mean/std fill = timm mode 'pixel' (per-pixel N(0, 1) after normalising)
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    # 224 / 256 = 0.875 crop ratio
    dict(
        type='ResizeEdge',
        scale=256,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline),
)

val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        pipeline=test_pipeline),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))

# ImageNet has no public test labels: testing evaluates the val split
test_dataloader = val_dataloader
test_evaluator = val_evaluator
