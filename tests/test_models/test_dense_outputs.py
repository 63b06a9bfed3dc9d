"""Dense-prediction outputs are NCHW-contiguous, plain and fused.

mmcv's CPU RoIAlign reads its input's memory as NCHW: a channels-last map (what a permuted
(B, H, W, C) tensor is) gives wrong RoI features without any error, and a Mask R-CNN whose
backbone returned such maps scored bbox mAP@50 0.02 instead of 1.00 on the demo set.
"""
import copy

import pytest
import torch
from mmcv.ops import RoIAlign

import mmvit_ext
from mmvit_ext.models.backbones import RMT
from mmvit_ext.models.backbones.rmt import FAMILY as RMT_FAMILY
from mmvit_ext.models.families import families

# every family's tiny arch, and RMT with the output norms of its dense-prediction configs
BACKBONES = {
    **{family.name: lambda family=family: family.backbone(family.tiny_arch,
                                                          out_indices=(0, 1, 2, 3))
       for family in families()},
    'rmt_out_norms': lambda: RMT(RMT_FAMILY.tiny_arch, out_indices=(0, 1, 2, 3),
                                 out_norm_cfg=dict(type='LN', eps=1e-5)),
}


@pytest.mark.parametrize('name', BACKBONES)
@pytest.mark.parametrize('mode', ['train', 'eval', 'fused'])
def test_outputs_are_nchw_contiguous_and_roi_align_reads_them_right(name, mode):
    torch.manual_seed(0)
    model = BACKBONES[name]().train(mode == 'train')
    if mode == 'fused':
        if not mmvit_ext.models.fused.can_fuse(model):
            pytest.skip(f'{name} has no fused blocks')
        model = mmvit_ext.fuse_for_cpu_inference(copy.deepcopy(model))
    with torch.set_grad_enabled(mode == 'train'):
        outs = model(torch.randn(2, 3, 64, 64))
    roi_align = RoIAlign(7, spatial_scale=0.25, sampling_ratio=0, aligned=True)
    rois = torch.tensor([[0, 3., 5., 40., 50.], [1, 10., 0., 63., 30.]])
    for out in outs:
        assert out.is_contiguous(), (name, mode, out.stride())
        torch.testing.assert_close(roi_align(out, rois),
                                   roi_align(out.detach().clone().contiguous(), rois))
