# Demo classification set of tools/generate_demo_data.py: 4 shape classes, 64x64 JPEGs,
# ImageNet-style class folders with meta/{train,val}.txt lists (mmpretrain CustomDataset).
dataset_type = 'CustomDataset'
data_root = 'data/demo/cls'
classes = ('circle', 'square', 'triangle', 'cross')

data_preprocessor = dict(
    num_classes=len(classes), mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)

# No flips: a flip would turn one class's diagonal stripes into another's.
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,  # upstream train.py injects True, which torch refuses with 0 workers
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='meta/train.txt',
                 data_prefix='train', classes=classes, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,  # upstream train.py injects True, which torch refuses with 0 workers
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='meta/val.txt',
                 data_prefix='val', classes=classes, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
