# Demo: a nano GroupMixFormer on the generated 4-class shape set, with the schedule of the RMT
# demo (configs/demo/rmt-nano_1xb32_demo-cls.py). Widths are multiples of 10 (five channel
# segments; 8 heads over four fifths of them).
_base_ = ['./rmt-nano_1xb32_demo-cls.py']

model = dict(
    backbone=dict(_delete_=True, type='mmvit_ext.GroupMixFormer',
                  arch=dict(embed_dims=[40, 80, 120, 160], depths=[1, 1, 2, 1],
                            mlp_ratios=[3, 3, 3, 3]),
                  out_indices=(3, )),
    neck=dict(in_channels=160),
    head=dict(in_channels=160))
