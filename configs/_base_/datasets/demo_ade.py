# Demo ADE20K-style semantic segmentation set of tools/generate_demo_data.py: 64x64 JPEGs with
# PNG label maps (0 "other" is ignored through reduce_zero_label, as in ADE20K).
dataset_type = 'BaseSegDataset'
data_root = 'data/demo/ade'
metainfo = dict(classes=('background', 'circle', 'square', 'triangle'),
                palette=[[120, 120, 120], [220, 40, 40], [40, 200, 60], [50, 80, 230]])
crop_size = (64, 64)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
_dataset = dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
                seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,  # upstream train.py injects True, which torch refuses with 0 workers
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**_dataset, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,  # upstream train.py injects True, which torch refuses with 0 workers
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**_dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
