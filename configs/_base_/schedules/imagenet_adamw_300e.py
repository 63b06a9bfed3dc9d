# ImageNet-1k 300-epoch AdamW schedule (DeiT/Swin style): lr 1e-3 for a global batch of 1024,
# wd 0.05 except norms/biases/1-D params, 5 linear warm-up epochs then cosine to 1e-5, per iter.
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW',
        lr=1e-3,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
)

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=5,
        end=300,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# `--auto-scale-lr` rescales lr linearly from this global batch size (8 GPUs x 128)
auto_scale_lr = dict(base_batch_size=1024)
