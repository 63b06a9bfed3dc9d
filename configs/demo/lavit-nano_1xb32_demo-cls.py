# Demo: a nano LaViT on the generated 4-class shape set, with the schedule of the RMT demo
# (configs/demo/rmt-nano_1xb32_demo-cls.py); one vanilla-attention layer then less-attention
# layers in every stage, the diagonality loss on.
_base_ = ['./rmt-nano_1xb32_demo-cls.py']

model = dict(
    type='mmvit_ext.AuxLossImageClassifier',
    backbone=dict(_delete_=True, type='mmvit_ext.LaViT',
                  arch=dict(embed_dims=[32, 64, 128, 128], depths=[3, 2, 2, 1],
                            num_heads=[2, 2, 4, 4], mlp_ratios=[4, 4, 4, 4],
                            num_va_layers=[1, 1, 1, 1]),
                  drop_path_rate=0.0, out_indices=(3, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'))
