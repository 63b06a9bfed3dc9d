# GroupMixFormer-L fine-tuned at 384x384 from its 224 checkpoint: the recipe of
# groupmixformer-s_8xb64_in1k-384px.py with the L backbone (drop path 0.5).
_base_ = './groupmixformer-s_8xb64_in1k-384px.py'

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.5),
    neck=dict(in_channels=480),
    head=dict(in_channels=480))
load_from = 'checkpoints/groupmixformer-l_in1k.pth'
