# Demo: a nano RMT (custom arch: decomposed MaSA in stages 1-3, full MaSA in stage 4) trained
# from scratch on the generated 4-class shape set (tools/generate_demo_data.py) in a few CPU
# minutes. The main job of README's first command.
_base_ = ['../_base_/datasets/demo_cls.py', '../_base_/default_runtime_cls.py']

rmt_nano = dict(embed_dims=[32, 64, 128, 128], depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4],
                mlp_ratios=[3, 3, 3, 3], init_values=[2, 2, 2, 2], heads_ranges=[4, 4, 6, 6],
                decomposed=[True, True, True, False],
                layer_scales=[False, False, False, False])

model = dict(
    type='ImageClassifier',
    backbone=dict(type='mmvit_ext.RMT', arch=rmt_nano, drop_path_rate=0.0, out_indices=(3, )),
    neck=dict(type='mmvit_ext.NormPoolNeck', in_channels=128, norm_cfg=dict(type='BN'),
              act_cfg=None),
    head=dict(type='LinearClsHead', num_classes=4, in_channels=128,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=8, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=8, val_interval=2)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=2, max_keep_ckpts=2))
randomness = dict(seed=0)
