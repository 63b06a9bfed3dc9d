"""GroupMixFormer: Group-Mix Attention and backbone against the official-layout oracle
(mmvit_ext/oracles/groupmixformer.py), converter round trip, exact sizes, API and errors."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmvit_ext.converters import groupmixformer as converter
from mmvit_ext.models.backbones.groupmixformer import FAMILY, GroupMixFormer
from mmvit_ext.models.layers.group_mix_attention import GroupMixAttention
from mmvit_ext.oracles.groupmixformer import (OfficialGroupMixFormer, OracleGroupMixAttention,
                                              oracle_model)
from tests.conftest import REPO

ROOT = Path(REPO)
TINY = FAMILY.tiny_arch


def randomise_bn(model):
    """Non-trivial BN affine and running statistics, so that eval mode tests them."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)


@pytest.mark.parametrize('dims,size', [(40, (7, 9)), (80, (14, 14)), (160, (5, 3)), (40, (1, 1))])
@pytest.mark.parametrize('train', [False, True])
def test_gma_matches_oracle(dims, size, train):
    torch.manual_seed(0)
    attn = GroupMixAttention(dims)
    randomise_bn(attn)
    oracle = OracleGroupMixAttention(attn)
    attn.train(train)
    oracle.train(train)
    x = torch.randn(2, *size, dims, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = attn(x), oracle(x_ref)
    assert out.shape == x.shape
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    # train mode: BN statistics pooled over q, k and v, updated like the official four BNs
    seg = dims // 5
    for i in range(4):
        official = getattr(oracle.att.aggregator, f'norm{i}')
        torch.testing.assert_close(attn.aggregator.norm.running_mean[i * seg:(i + 1) * seg],
                                   official.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(attn.aggregator.norm.running_var[i * seg:(i + 1) * seg],
                                   official.running_var, atol=1e-6, rtol=1e-5)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (out_ref * weight).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)


def test_gma_scale_is_official():
    # (C // 8) ** -0.5 over the full width, not the head width d = C / 10
    assert GroupMixAttention(320).scale == pytest.approx(40 ** -0.5)


@pytest.mark.parametrize('train', [False, True])
def test_backbone_matches_oracle(train):
    torch.manual_seed(0)
    model = GroupMixFormer(TINY, out_indices=(0, 1, 2, 3))
    model.init_weights()
    randomise_bn(model)
    model.train(train)
    oracle = oracle_model(model)
    assert oracle.training == train
    for size in [(64, 64), (200, 200), (225, 160), (33, 47)]:
        x = torch.randn(2, 3, *size)
        outs, expected = model(x), oracle(x)
        strides = [4, 8, 16, 32]
        for out, ref, dims, stride in zip(outs, expected, TINY['embed_dims'], strides):
            assert out.shape == (2, dims, -(-size[0] // stride), -(-size[1] // stride))
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.stages[1].blocks[0].attn.aggregator.norm.running_var[:8],
                               oracle.model.groupmixformer_backbone[1].gma_stage[0].att
                               .aggregator.norm0.running_var)


@pytest.mark.parametrize('wrap', [True, False])
def test_converter_round_trip(tmp_path, wrap):
    torch.manual_seed(0)
    arch = GroupMixFormer.arch_settings['m']
    official = OfficialGroupMixFormer(arch['embed_dims'], arch['depths'], arch['mlp_ratios'],
                                      num_classes=10)
    randomise_bn(official)
    official.eval()
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    sd = official.state_dict()
    assert len(sd) == 1149  # spec section 3: the official M state_dict has 1149 keys
    torch.save({'model': sd} if wrap else sd, src)
    converter.convert_file(str(src), str(dst))
    classifier = converter.build_classifier('m', 10).eval()
    state_dict = torch.load(dst, map_location='cpu')['state_dict']
    classifier.load_state_dict(state_dict, strict=True)
    x = torch.randn(2, 3, 72, 88)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x, mode='tensor'), official(x), atol=1e-5,
                                   rtol=1e-5)


def test_reverse_key_map_inverts_the_converter():
    # the oracle loads our weights through backbone_to_official: exactly the official tensors
    official = OfficialGroupMixFormer(TINY['embed_dims'], TINY['depths'], TINY['mlp_ratios'])
    randomise_bn(official)
    official = official.state_dict()
    ours = {k[len('backbone.'):]: v for k, v in converter.convert(official).items()}
    back = converter.backbone_to_official(ours)
    assert sorted(back) == sorted(official)
    for key, value in back.items():
        assert torch.equal(value, official[key]), key


def test_converter_is_strict(tmp_path):
    official = OfficialGroupMixFormer(*GroupMixFormer.arch_settings['m'].values(), num_classes=10)
    sd = official.state_dict()
    sd['local_net.0.weight'] = torch.zeros(1)
    torch.save({'model': sd}, tmp_path / 'bad.pth')
    with pytest.raises(KeyError, match='local_net'):
        converter.convert_file(str(tmp_path / 'bad.pth'), str(tmp_path / 'out.pth'))


@pytest.mark.parametrize('variant,params', [('m', 5_733_120), ('t', 10_949_152),
                                            ('s', 22_421_320), ('b', 45_827_272),
                                            ('l', 71_833_648)])
def test_exact_sizes_from_configs(variant, params):
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(ROOT / f'configs/groupmixformer/groupmixformer-{variant}_8xb128_in1k.py')
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == params


def test_errors():
    with pytest.raises(ValueError, match='Unknown GroupMixFormer arch'):
        GroupMixFormer('xl')
    with pytest.raises(ValueError, match='multiple of 10'):
        GroupMixFormer(dict(embed_dims=[20, 40, 64, 80], depths=[1] * 4, mlp_ratios=[4] * 4))
    with pytest.raises(ValueError, match='num_heads=8'):
        GroupMixAttention(40, num_heads=4)
    with pytest.raises(ValueError, match='missing keys'):
        GroupMixFormer(dict(embed_dims=[20, 40, 60, 80], depths=[1] * 4))
    with pytest.raises(ValueError, match='out_indices'):
        GroupMixFormer(TINY, out_indices=(4, ))


def test_api_frozen_norm_eval_with_cp(checkpoint_calls):
    torch.manual_seed(0)
    model = GroupMixFormer(TINY, out_indices=(1, 3), frozen_stages=1, norm_eval=True,
                           with_cp=True)
    model.train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.stages[0].parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    x = torch.randn(2, 3, 64, 64)
    outs = model(x)
    # every block but those of the frozen stage 0, whose input needs no grad
    assert len(checkpoint_calls) == sum(TINY['depths'][1:])
    assert [tuple(o.shape) for o in outs] == [(2, 40, 8, 8), (2, 80, 2, 2)]
    sum(o.sum() for o in outs).backward()
    assert model.stages[1].blocks[0].attn.qkv.weight.grad is not None
    plain = GroupMixFormer(TINY, out_indices=(1, 3), frozen_stages=1, norm_eval=True)
    plain.load_state_dict(model.state_dict())
    plain.train()
    for a, b in zip(plain(x), outs):
        torch.testing.assert_close(a, b)
    assert model.get_layer_depth('backbone.stages.1.blocks.1.attn.qkv.weight',
                                 'backbone.') == (3, 7)  # stem 0, stage-0 block 1
