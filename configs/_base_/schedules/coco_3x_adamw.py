# COCO 3x schedule: coco_1x_adamw.py (500-iteration linear warm-up, AdamW lr 1e-4 / wd 0.05, no
# decay on norm layers) over 36 epochs, lr x0.1 after epochs 27, 33.
_base_ = './coco_1x_adamw.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1),
]
