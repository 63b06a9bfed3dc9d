# Demo: a nano Pale Transformer on the generated 4-class shape set, with the schedule of the
# RMT demo (configs/demo/rmt-nano_1xb32_demo-cls.py). Pale size 3: the 16x16 stage-1 map of a
# 64x64 image splits into 6 interlaced row groups and 6 column groups.
_base_ = ['./rmt-nano_1xb32_demo-cls.py']

model = dict(
    backbone=dict(_delete_=True, type='mmvit_ext.PaleTransformer',
                  arch=dict(embed_dims=[32, 64, 128, 128], depths=[1, 1, 2, 1],
                            num_heads=[2, 4, 4, 4], pale_size=3, mlp_ratio=3),
                  with_out_norms=False, out_indices=(3, )),
    neck=dict(norm_cfg=dict(type='LN', eps=1e-6)))
