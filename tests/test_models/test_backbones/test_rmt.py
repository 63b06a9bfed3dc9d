"""RMT: Manhattan self-attention vs the plain oracle, backbone API, converter, configs."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmvit_ext.converters import rmt as converter
from mmvit_ext.models.backbones.rmt import FAMILY, RMT
from mmvit_ext.models.layers import (DecomposedManhattanSelfAttention, ManhattanRelPos,
                                     ManhattanSelfAttention)
from mmvit_ext.models.layers.manhattan_attention import rotate_pairs
from mmvit_ext.registry import MODELS
from tests.conftest import REPO, run_tool
from mmvit_ext.oracles import randomize_
from mmvit_ext.oracles import rmt as oracle

ROOT = Path(REPO)
SIZES = [(7, 7), (9, 13), (14, 14), (5, 8)]
# the family's small arch: both attention forms, layer scales and non-square head splits
TINY = FAMILY.tiny_arch


# -- relative-position package ---------------------------------------------------------------
def test_decay_and_angle_values_from_spec():
    # RMT-S stage 1: N=4, a=2, b=4 -> gamma = 1 - 2^-(2, 3, 4, 5)
    rel_pos = ManhattanRelPos(64, 4, initial_value=2, heads_range=4)
    torch.testing.assert_close(rel_pos.decay.exp(), torch.tensor([0.75, 0.875, 0.9375, 0.96875]))
    spec_angles = torch.tensor([1, 0.2683, 0.07197, 0.01931, 0.005179, 0.001389, 3.728e-4, 1e-4])
    torch.testing.assert_close(rel_pos.angle, spec_angles.repeat_interleave(2), rtol=1e-3,
                               atol=0)
    # N=16, b=6: exponents 2, 2.375, ..., 7.625
    gamma = ManhattanRelPos(512, 16, 2, 6).decay.exp()
    assert gamma[0].item() == pytest.approx(0.75)
    assert gamma[-1].item() == pytest.approx(0.99493, abs=1e-5)
    # d=32: 16 frequencies from 1 to 1e-4, end point included
    angle = ManhattanRelPos(256, 8, 2, 6).angle
    assert angle.numel() == 32
    assert angle[0].item() == 1 and angle[-1].item() == pytest.approx(1e-4)


def test_rel_pos_matches_oracle_and_is_cached():
    ours = ManhattanRelPos(24, 3, 2, 5)
    ref = oracle.RetNetRelPos2d(24, 3, 2, 5)
    x = torch.zeros(1)
    for H, W in SIZES:
        (cos, sin), (mask_w, mask_h) = ours(H, W, True, like=x)
        (ref_sin, ref_cos), (ref_h, ref_w) = ref(H, W, True)
        # pair j: official channels (2j, 2j + 1), ours (j, j + d/2); the sine table carries
        # the sign of the rotation, (-sin, sin)
        d = ref_cos.shape[-1]
        for ours_half, official in ((slice(0, d // 2), slice(0, d, 2)),
                                    (slice(d // 2, d), slice(1, d, 2))):
            torch.testing.assert_close(cos.squeeze(2)[..., ours_half], ref_cos[..., official])
        torch.testing.assert_close(sin.squeeze(2)[..., :d // 2], -ref_sin[..., 0::2])
        torch.testing.assert_close(sin.squeeze(2)[..., d // 2:], ref_sin[..., 1::2])
        torch.testing.assert_close(mask_w, ref_w[None])
        torch.testing.assert_close(mask_h, ref_h[None])  # (1, N, H, H), broadcast, not repeated
        _, mask = ours(H, W, False, like=x)
        torch.testing.assert_close(mask, ref(H, W, False)[1][None])
    # same size, device and dtype: the very same tensors; another size: rebuilt
    first = ours(9, 13, True, like=x)
    assert ours(9, 13, True, like=x) is first
    assert ours(9, 12, True, like=x) is not first
    assert all(t.dtype == torch.float64 for t in ours(9, 12, True, like=x.double())[0])
    # derived constants are not part of any checkpoint
    assert not ours.state_dict()
    assert not [k for k in RMT(TINY).state_dict() if 'rel_pos' in k]


def test_rotation_and_its_gradient():
    """rotate_pairs against the written-out official form ``x cos + rotate_every_two(x) sin``
    (pairs as halves here), and its hand-written backward against numerical gradients."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 3, 2, 8, dtype=torch.float64, requires_grad=True)
    (cos, sin), _ = ManhattanRelPos(24, 3)(5, 6, True, like=x)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    first, second = x.detach().chunk(2, dim=-1)
    written_out = x.detach() * cos + torch.cat((second, first), dim=-1) * sin
    torch.testing.assert_close(rotate_pairs(x, cos, sin), written_out, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: rotate_pairs(t, cos, sin), (x, ))
    # half-precision q/k with fp32 tables (CPU autocast) stay in their dtype
    assert rotate_pairs(x.detach().bfloat16(), cos.float(), sin.float()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match='must not require grad'):
        rotate_pairs(x, cos.requires_grad_(), sin)


# -- attention vs oracle -----------------------------------------------------------------------
@pytest.mark.parametrize('decomposed', [True, False])
@pytest.mark.parametrize('training', [False, True])
def test_attention_matches_oracle(decomposed, training, attention_kernel):
    torch.manual_seed(0)
    C, N = 48, 3
    ours_cls = DecomposedManhattanSelfAttention if decomposed else ManhattanSelfAttention
    ref_cls = oracle.VisionRetentionChunk if decomposed else oracle.VisionRetentionAll
    ours = randomize_(ours_cls(C, N)).train(training)
    ref = ref_cls(C, N).train(training)
    ref.load_state_dict({k.replace('lce.', 'lepe.conv.'): v for k, v in ours.state_dict().items()})
    rel_pos, ref_rel_pos = ManhattanRelPos(C, N, 2, 6), oracle.RetNetRelPos2d(C, N, 2, 6)
    for H, W in SIZES:
        x = torch.randn(2, H, W, C, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_()
        out = ours(x, rel_pos(H, W, decomposed, like=x))
        out_ref = ref(x_ref, ref_rel_pos(H, W, decomposed))
        torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-5)
        weight = torch.randn_like(out)
        (out * weight).sum().backward()
        (out_ref * weight).sum().backward()
        # gradients reach ~3 here: fp32 accumulation order differs by a few 1e-6 relative
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)


def test_attention_modules_registered():
    attn = MODELS.build(dict(type='mmvit_ext.DecomposedManhattanSelfAttention', embed_dims=32,
                             num_heads=2))
    rel_pos = MODELS.build(dict(type='mmvit_ext.ManhattanRelPos', embed_dims=32, num_heads=2))
    x = torch.randn(1, 5, 6, 32)
    assert attn(x, rel_pos(5, 6, True, like=x)).shape == x.shape
    full = MODELS.build(dict(type='mmvit_ext.ManhattanSelfAttention', embed_dims=32,
                             num_heads=2))
    assert full(x, rel_pos(5, 6, False, like=x)).shape == x.shape


# -- backbone --------------------------------------------------------------------------------
@pytest.mark.parametrize('training', [False, True])
def test_backbone_matches_oracle(training):
    torch.manual_seed(0)
    model = randomize_(RMT(TINY, out_indices=(0, 1, 2, 3),
                           out_norm_cfg=dict(type='LN', eps=1e-5))).train(training)
    ref = oracle.oracle_model(model)
    for H, W in [(64, 64), (45, 71)]:
        x = torch.randn(2, 3, H, W)
        outs, ref_outs = model(x), ref(x)
        assert len(outs) == 4
        for out, ref_out in zip(outs, ref_outs):
            torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)


def test_norm_eval_freezes_bn_statistics():
    x = torch.randn(2, 3, 32, 32)
    # SyncBN (the det/seg norm) included: norm_eval keeps it in eval mode, so it runs on CPU
    model = RMT(TINY, norm_cfg=dict(type='SyncBN'), norm_eval=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k}
    model(x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model = RMT(TINY, norm_eval=False).train()
    model(x)
    assert not torch.equal(model.patch_embed[1].running_mean, torch.zeros(8))


def test_bad_arch_and_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match='Unknown RMT arch "x"'):
        RMT('x')
    bad = dict(TINY)
    bad.pop('heads_ranges')
    with pytest.raises(ValueError, match='heads_ranges'):
        RMT(bad)
    missing = str(tmp_path / 'rmt-t_in1k.pth')
    with pytest.raises(FileNotFoundError, match='rmt_to_mmvit.py'):
        RMT(TINY, init_cfg=dict(type='Pretrained', checkpoint=missing)).init_weights()
    other = dict(TINY, embed_dims=[16, 32, 32, 64], num_heads=[2, 2, 4, 4])
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in RMT(other).state_dict().items()}},
               path)
    with pytest.raises(RuntimeError, match='shape mismatches'):
        RMT(TINY, init_cfg=dict(type='Pretrained', checkpoint=path,
                                prefix='backbone.')).init_weights()


# -- converter -------------------------------------------------------------------------------
def test_convert_classifier_round_trip():
    torch.manual_seed(0)
    official = randomize_(oracle.VisRetNet(TINY, num_classes=10)).eval()
    state_dict = official.state_dict()
    converted, arch, kind = converter.convert(state_dict, TINY)
    assert kind == 'classifier' and arch == TINY
    classifier = converter.build_classifier(arch, 10)
    classifier.load_state_dict(converted)  # strict
    classifier.eval()
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x, mode='tensor'), official(x), rtol=0, atol=1e-5)
    # our classifier wrapped by the oracle computes the same function
    with torch.no_grad():
        ref = oracle.oracle_model(classifier).eval()
        torch.testing.assert_close(ref(x, mode='tensor'), official(x), rtol=0, atol=1e-5)


def test_convert_dense_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    official = randomize_(oracle.VisRetNet(TINY, num_classes=None)).eval()
    state_dict = {'backbone.' + k: v for k, v in official.state_dict().items()}
    others = {'neck.lateral_convs.0.conv.weight': torch.randn(8, 16, 1, 1),
              'decode_head.conv_seg.bias': torch.randn(150)}
    state_dict.update(others)
    converted, _, kind = converter.convert(state_dict, TINY)
    assert kind == 'dense'
    for key, value in others.items():
        assert converted[key] is value
    assert 'backbone.out_norms.3.weight' in converted
    path = str(tmp_path / 'det.pth')
    torch.save({'state_dict': converted}, path)
    model = RMT(TINY, out_indices=(0, 1, 2, 3), out_norm_cfg=dict(type='LN', eps=1e-5),
                init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        for ours, ref in zip(model(x), official(x)):
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_reverse_key_map_inverts_the_converter():
    # the oracle loads our weights through backbone_to_official: exactly the official tensors
    official = randomize_(oracle.VisRetNet(TINY, num_classes=None)).state_dict()
    ours = converter.convert_backbone(official, RMT.resolve_arch(TINY))
    back = converter.backbone_to_official(ours)
    assert list(back) == [k for k in official if 'Relpos' not in k]
    for key, value in back.items():
        assert torch.equal(value, official[key]), key
    with pytest.raises(KeyError, match='stages.0.downsample.conv.weight'):
        converter.backbone_to_official({'stages.0.downsample.conv.weight': torch.zeros(1)})


def test_converter_rejects_bad_checkpoints():
    state_dict = oracle.VisRetNet(TINY, num_classes=10).state_dict()
    wrong = dict(state_dict)
    wrong['layers.2.Relpos.decay'] = wrong['layers.2.Relpos.decay'] * 1.01
    with pytest.raises(ValueError, match='layers.2.Relpos.decay'):
        converter.convert(wrong, TINY)
    extra = dict(state_dict, **{'aux_head.weight': torch.zeros(10, 48)})
    with pytest.raises(KeyError, match='aux_head.weight'):
        converter.convert(extra, TINY)
    with pytest.raises(ValueError, match='No official RMT variant'):
        converter.convert(state_dict)  # TINY is not an official variant


def _official_state_dict(name, seed):
    """Real-valued official state_dict of a full-size variant, built without the slow init."""
    arch = RMT.arch_settings[name]
    with torch.device('meta'):
        model = oracle.VisRetNet(arch)
    gen = torch.Generator().manual_seed(seed)
    state_dict = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else
                  torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()}
    for i in range(4):
        rel_pos = oracle.RetNetRelPos2d(arch['embed_dims'][i], arch['num_heads'][i],
                                        arch['init_values'][i], arch['heads_ranges'][i])
        state_dict[f'layers.{i}.Relpos.decay'] = rel_pos.decay
        state_dict[f'layers.{i}.Relpos.angle'] = rel_pos.angle
    return state_dict


@pytest.mark.slow
def test_converter_cli_entry_and_arch_inference(tmp_path):
    model, ema = _official_state_dict('T', 0), _official_state_dict('T', 1)
    assert len(model) == 374  # spec section 3
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'rmt-t_in1k.pth'
    torch.save({'model': model, 'model_ema': ema, 'epoch': 299}, src)
    proc = run_tool(['tools/model_converters/rmt_to_mmvit.py', str(src), str(dst), '--entry',
                     'model_ema'], cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 'RMT-T classifier checkpoint' in proc.stdout
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert out['meta']['arch'] == 'RMT-T'
    converted = out['state_dict']
    with torch.device('meta'):
        keys = set(converter.build_classifier(RMT.arch_settings['T'], 1000).state_dict())
    assert set(converted) == keys
    assert torch.equal(converted['head.fc.weight'], ema['head.weight'])
    assert torch.equal(converted['backbone.stages.3.downsample.conv.weight'],
                       ema['layers.2.downsample.reduction.weight'])
    assert torch.equal(converted['backbone.stages.2.blocks.7.attn.lce.weight'],
                       ema['layers.2.blocks.7.retention.lepe.conv.weight'])


# -- configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize('variant,params', [('t', 14_334_216), ('s', 26_967_240),
                                            ('b', 54_154_896), ('l', 95_464_864)])
def test_classifier_param_counts(variant, params):
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(str(ROOT / f'configs/rmt/rmt-{variant}_8xb128_in1k.py'))
    with torch.device('meta'):
        model = PRETRAIN_MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == params
    if variant == 's':
        assert Config.fromfile(str(ROOT / 'configs/rmt/rmt-s_in1k.py')).model == cfg.model


def test_decomposed_flag_per_variant():
    with torch.device('meta'):
        assert [s.decomposed for s in RMT('t').stages] == [True, True, False, False]
        model = RMT('l')
    assert [s.decomposed for s in model.stages] == [True, True, True, False]
    assert model.stages[2].blocks[0].ls1.weight.shape == (448, )
