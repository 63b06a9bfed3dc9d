"""Pale Transformer: PS-Attention against the masked full-attention oracle (spec pale.md section
7), the interlaced grouping, sizes against the paper, and the standard backbone API."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn

from mmvit_ext.models import PaleShapedAttention, PaleTransformer
from mmvit_ext.models.backbones.pale import FAMILY
from mmvit_ext.registry import MODELS
from mmvit_ext.oracles import oracle_for
from mmvit_ext.oracles.pale import oracle_model
from tests.conftest import REPO

TINY = FAMILY.tiny_arch


def randomise_bn(module):
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(std=0.1)
            m.running_mean.normal_(std=0.1)
            m.running_var.uniform_(0.5, 1.5)


def attention(dims=16, heads=4, pale_size=7):
    module = PaleShapedAttention(dims, heads, pale_size)
    randomise_bn(module)
    return module


# -- numerics against the oracle ------------------------------------------------------------
@pytest.mark.parametrize('height, width, pale_size', [
    (14, 14, 7),  # divisible
    (7, 7, 7),  # one group per axis: global
    (9, 13, 7),  # padded rows and columns, masked keys
    (20, 11, 7),  # three row groups (21 padded rows), two column groups
    (5, 6, 7),  # pale size larger than both sides: clamped
    (9, 13, (3, 4)),  # different row / column pale sizes
    (1, 1, 7),
])
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_attention_matches_oracle(height, width, pale_size, mode, attention_kernel):
    torch.manual_seed(0)
    module = attention(pale_size=pale_size).train(mode == 'train')
    oracle = oracle_model(module)
    x = torch.randn(2, height, width, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, ref = module(x), oracle(x_ref)
    assert out.shape == (2, height, width, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('shape', [(64, 64), (50, 70)])
def test_backbone_matches_oracle(shape):
    torch.manual_seed(0)
    model = PaleTransformer(TINY, out_indices=(0, 1, 2, 3))
    model.init_weights()
    randomise_bn(model)
    oracle = oracle_for(model)
    assert not any(isinstance(m, PaleShapedAttention) for m in oracle.modules())
    x = torch.randn(2, 3, *shape)
    for mode in (True, False):
        model.train(mode)
        oracle.train(mode)
        for out, ref in zip(model(x), oracle(x)):
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# -- the interlaced grouping ----------------------------------------------------------------
def identity_attention(dims, heads, pale_size):
    """PS-Attention with identity q/k/v/projection: gradients then show who attends to whom."""
    module = PaleShapedAttention(dims, heads, pale_size)
    module.q = module.k = module.v = nn.Identity()
    module.proj = nn.Identity()
    return module


@pytest.mark.parametrize('height, width, pale_size', [(14, 14, 7), (21, 10, 7), (9, 13, 7),
                                                      (20, 11, 7)])
def test_grouping_is_interlaced(height, width, pale_size):
    """Token (y, x) sees, through the row-branch channels, exactly the rows y' = y (mod n_r)
    (n_r = H / s_r, or ceil(H / s_r) with padding), all columns; the column branch likewise."""
    torch.manual_seed(0)
    dims = 8
    module = identity_attention(dims, 2, pale_size)
    n_r = math.ceil(height / min(pale_size, height))
    n_c = math.ceil(width / min(pale_size, width))
    ys = torch.arange(height)[:, None].expand(height, width)
    xs = torch.arange(width)[None, :].expand(height, width)
    for y, x in [(0, 0), (height - 1, width - 1), (height // 2, 1)]:
        inp = torch.randn(1, height, width, dims, requires_grad=True)
        module(inp)[0, y, x, :dims // 2].sum().backward()
        reached = inp.grad[0, :, :, :dims // 2].abs().sum(-1) > 0
        assert torch.equal(reached, ys % n_r == y % n_r)
        assert inp.grad[..., dims // 2:].abs().sum() == 0  # branches do not mix

        inp = torch.randn(1, height, width, dims, requires_grad=True)
        module(inp)[0, y, x, dims // 2:].sum().backward()
        reached = inp.grad[0, :, :, dims // 2:].abs().sum(-1) > 0
        assert torch.equal(reached, xs % n_c == x % n_c)
        assert inp.grad[..., :dims // 2].abs().sum() == 0


def test_padded_keys_take_no_weight():
    """With H = 9, s = 7 (padded to 14), a query's row-branch output is a convex combination of
    its group's real values only: with values = 1 on real tokens the output is exactly 1."""
    module = identity_attention(4, 2, 7)
    x = torch.randn(1, 9, 5, 4)
    q, k = x[..., :2], x[..., :2]
    out = module._row_attention(q, k, torch.ones_like(q))
    torch.testing.assert_close(out, torch.ones_like(out))


# -- sizes against the paper (spec section 4), counted as get_flops.py counts ----------------
@pytest.mark.slow  # builds the full-size models and traces them: ~10 s each
@pytest.mark.parametrize('variant, params_m, gflops', [('t', 22, 4.2), ('s', 48, 9.0),
                                                       ('b', 85, 15.6)])
def test_sizes_match_paper(variant, params_m, gflops):
    from mmvit_ext.analysis import count_flops, count_params
    from mmvit_ext.utils.config import build_from_config, load_config
    cfg = load_config(osp.join(REPO, f'configs/pale/pale-{variant}_8xb128_in1k.py'))
    model = build_from_config(cfg, inference_only=True)
    params = count_params(model)
    assert abs(params / 1e6 - params_m) / params_m < 0.03, params
    flops, _, _ = count_flops(model, (torch.randn(1, 3, 224, 224), ))
    assert abs(flops / 1e9 - gflops) / gflops < 0.03, flops


# -- standard backbone API ------------------------------------------------------------------
def test_arch_errors():
    with pytest.raises(ValueError, match='Unknown PaleTransformer arch'):
        PaleTransformer('huge')
    with pytest.raises(ValueError, match='missing keys'):
        PaleTransformer(dict(embed_dims=[8], depths=[1]))
    with pytest.raises(ValueError, match='pale_size'):
        PaleTransformer(TINY, pale_size=[7, 7])
    with pytest.raises(ValueError, match='even num_heads'):
        PaleShapedAttention(12, 3)
    with pytest.raises(ValueError, match='channels-last'):
        PaleShapedAttention(8, 2)(torch.randn(1, 8, 5, 5)[:, :, :, :4])


def test_variants_by_name():
    for name in ('t', 'T', 'tiny'):
        assert PaleTransformer.resolve_arch(name)['embed_dims'] == [64, 128, 256, 512]
    assert PaleTransformer.resolve_arch('b')['num_heads'] == [4, 8, 16, 32]


def test_out_indices_shapes_and_norms():
    model = PaleTransformer(TINY, out_indices=(0, 1, 2, 3)).eval()
    outs = model(torch.randn(1, 3, 45, 61))
    sides = [(12, 16), (6, 8), (3, 4), (2, 2)]
    assert [tuple(o.shape) for o in outs] == [(1, c, h, w) for c, (h, w)
                                             in zip(TINY['embed_dims'], sides)]
    assert all(isinstance(n, nn.LayerNorm) for n in model.out_norms)
    model = PaleTransformer(TINY, out_indices=(-1, ), with_out_norms=False).eval()
    assert model.out_norms is None and len(model(torch.randn(1, 3, 32, 32))) == 1


def test_pale_size_override_makes_attention_global():
    model = PaleTransformer(TINY, pale_size=1000)
    assert all(b.attn.pale_size == (1000, 1000) for s in model.stages for b in s.blocks)
    model = PaleTransformer(TINY, pale_size=[7, 5, (3, 2), 1])
    assert [s.blocks[0].attn.pale_size for s in model.stages] == [(7, 7), (5, 5), (3, 2),
                                                                  (1, 1)]


def test_drop_path_rate_and_layer_depth():
    model = PaleTransformer(TINY, drop_path_rate=0.4)
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0.
             for s in model.stages for b in s.blocks]
    assert rates[0] == 0. and rates[-1] == pytest.approx(0.4)
    assert rates == sorted(rates)
    num_layers = sum(TINY['depths']) + 2
    assert model.get_layer_depth('backbone.patch_embed.proj.weight', 'backbone.') == (
        0, num_layers)
    assert model.get_layer_depth('backbone.stages.2.blocks.1.attn.q.dw.weight',
                                 'backbone.') == (4, num_layers)
    assert model.get_layer_depth('backbone.stages.1.downsample.proj.weight',
                                 'backbone.') == (2, num_layers)


def test_classifier_checkpoint_loads_into_dense_backbone(tmp_path):
    """A classifier (no output norms) initialises a detection/segmentation backbone."""
    import mmpretrain.models  # noqa: F401 (registers ImageClassifier)
    from mmpretrain.registry import MODELS as CLS_MODELS
    classifier = CLS_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='mmvit_ext.PaleTransformer', arch=TINY, with_out_norms=False),
        neck=dict(type='mmvit_ext.NormPoolNeck', in_channels=32,
                  norm_cfg=dict(type='LN', eps=1e-6)),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=32)))
    assert classifier(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    path = str(tmp_path / 'pale_cls.pth')
    torch.save(dict(state_dict=classifier.state_dict()), path)
    dense = PaleTransformer(TINY, out_indices=(0, 1, 2, 3), init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    dense.init_weights()
    for key, value in classifier.backbone.state_dict().items():
        torch.testing.assert_close(dense.state_dict()[key], value)
    missing = PaleTransformer(TINY, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'nope.pth'), prefix='backbone.'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        missing.init_weights()


def test_registered_and_usable_alone():
    # scoped names, as configs use them: earlier tests may have set another default scope
    attn = MODELS.build(dict(type='mmvit_ext.PaleShapedAttention', embed_dims=16, num_heads=4,
                             pale_size=(2, 3)))
    assert attn(torch.randn(2, 5, 7, 16)).shape == (2, 5, 7, 16)
    backbone = MODELS.build(dict(type='mmvit_ext.PaleTransformer', arch=TINY))
    assert isinstance(backbone, PaleTransformer)
