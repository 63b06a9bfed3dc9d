"""LaViT: attention layers, backbone, diagonality loss, aux-loss models (spec: lavit.md §5)."""
import math

import pytest
import torch

from mmvit_ext.models.backbones.lavit import FAMILY, LaViT
from mmvit_ext.models.layers.less_attention import LessAttention, VanillaAttention
from mmvit_ext.models.layers.residual_attention_downsample import ResidualAttentionDownsample
from mmvit_ext.models.losses.diagonality_loss import DiagonalityLoss, diagonality_loss
from mmvit_ext.registry import MODELS
from mmvit_ext.oracles import oracle_for
from mmvit_ext.oracles.lavit import (OracleLessAttention, OracleResidualAttentionDownsample,
                                     OracleVanillaAttention, oracle_diagonality_loss, softmax)

TINY = FAMILY.tiny_arch
ODD_SIZES = [(8, 8), (5, 7), (9, 4), (1, 3)]


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def randomise_transforms(model):
    """Move Theta, Psi and the head mixing away from their init so that tests can fail."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LessAttention):
                m.theta.weight.add_(0.2 * torch.randn_like(m.theta.weight))
                m.theta.bias.normal_()
                m.psi.weight.add_(0.3 * torch.randn_like(m.psi.weight))
            elif isinstance(m, ResidualAttentionDownsample):
                m.head_mix.weight.normal_()
                m.head_mix.bias.normal_()
    return model


def tiny_lavit(**kwargs):
    kwargs.setdefault('drop_path_rate', 0.0)
    return randomise_transforms(LaViT(arch=dict(TINY), **kwargs))


# -- attention layers against the oracle --------------------------------------------------------
@pytest.mark.parametrize('hw', ODD_SIZES)
def test_less_attention_matches_oracle(hw):
    la = randomise_transforms(LessAttention(16, num_heads=2))
    x = torch.randn(2, hw[0] * hw[1], 16)
    prev = 3 * torch.randn(2, 2, hw[0] * hw[1], 49)
    out, logits = la(x, hw, prev)
    ref_out, ref_logits = OracleLessAttention(la)(x, hw, prev)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('hw', ODD_SIZES)
def test_vanilla_attention_matches_oracle_and_adds_residual(hw):
    va = VanillaAttention(24, num_heads=3)
    x = torch.randn(2, hw[0] * hw[1], 24)
    residual = torch.randn(2, 3, hw[0] * hw[1], 49)
    out, logits = va(x, hw, residual)
    ref_out, ref_logits = OracleVanillaAttention(va)(x, hw, residual)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(va(x, hw)[1] + residual, logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('hw', [(8, 8), (7, 5), (3, 9), (1, 1)])
def test_residual_attention_downsample_matches_oracle_and_conv_sizes(hw):
    down = randomise_transforms(ResidualAttentionDownsample(2, 5))
    logits = torch.randn(2, 2, hw[0] * hw[1], 49)
    out = down(logits, hw)
    torch.testing.assert_close(out, OracleResidualAttentionDownsample(down)(logits, hw),
                               atol=1e-5, rtol=1e-5)
    conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1)
    h2, w2 = conv(torch.zeros(1, 1, *hw)).shape[2:]
    assert out.shape == (2, 5, h2 * w2, 49)


def test_identity_init_reproduces_previous_attention():
    la = LessAttention(16, num_heads=2)
    prev = 4 * torch.randn(1, 2, 35, 49)
    assert torch.equal(la.transform_logits(prev, (5, 7)), prev)
    # Also after the backbone's own initialisation: every LA block repeats its predecessor.
    model = LaViT(arch=dict(TINY), drop_path_rate=0.0)
    model.init_weights()
    logits = []
    for stage in model.stages:
        for block in stage.blocks:
            block.attn.register_forward_hook(lambda m, i, o: logits.append((m, o[1])))
    model.eval()(torch.randn(1, 3, 45, 61))
    checked = 0
    for (prev_m, prev_s), (m, s) in zip(logits, logits[1:]):
        if isinstance(m, LessAttention):
            torch.testing.assert_close(softmax(s), softmax(prev_s), atol=0, rtol=0)
            checked += 1
    assert checked == 4


# -- whole backbone ------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(64, 64), (45, 77)])
@pytest.mark.parametrize('train', [False, True])
def test_backbone_matches_oracle(size, train):
    model = tiny_lavit(out_indices=(0, 1, 2, 3)).train(train)
    oracle = oracle_for(model).train(train)
    x = torch.randn(2, 3, *size)
    outs, ref = model(x), oracle(x)
    for out, r in zip(outs, ref):
        torch.testing.assert_close(out, r, atol=1e-5, rtol=1e-4)
    aux, ref_aux = model.pop_aux_losses(), oracle.pop_aux_losses()
    assert set(aux) == set(ref_aux) == ({'loss_diag'} if train else set())
    if train:
        torch.testing.assert_close(aux['loss_diag'], ref_aux['loss_diag'], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('size', [(800, 1216), (33, 47), (17, 17)])
def test_any_input_size(size):
    model = LaViT(arch=dict(TINY), out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    for i, out in enumerate(outs):
        assert out.shape == (1, TINY['embed_dims'][i], h, w)
        assert torch.isfinite(out).all()
        h, w = math.ceil(h / 2), math.ceil(w / 2)


def test_all_vanilla_skeleton_and_parameter_accounting():
    """LaViT = all-VA skeleton - Q/K of every LA layer + Theta/Psi of every LA layer."""
    model = LaViT(arch=dict(TINY))
    skeleton = LaViT(arch=dict(TINY), num_va_layers=TINY['depths'])
    arch = skeleton.arch
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expected = count(skeleton)
    for d, depth, h, va in zip(arch['embed_dims'], arch['depths'], arch['num_heads'],
                               model.arch['num_va_layers']):
        expected += (depth - va) * (-2 * (d * d + d) + 49 * 49 + 49 + 9 * h)
    assert count(model) == expected
    skeleton.train()(torch.randn(1, 3, 32, 32))
    assert skeleton.pop_aux_losses() == {}  # no LA layer, no loss


# -- diagonality-preserving loss -----------------------------------------------------------
@pytest.mark.parametrize('hw', [(14, 14), (10, 13), (5, 3)])
def test_diagonality_loss_matches_oracle(hw):
    attn = torch.randn(2, 3, hw[0] * hw[1], 49).softmax(-1)
    torch.testing.assert_close(diagonality_loss(attn, hw), oracle_diagonality_loss(attn, hw),
                               atol=1e-6, rtol=1e-6)


def test_diagonality_loss_decreases_when_attention_more_diagonal():
    hw = (21, 28)
    ys, xs = torch.meshgrid(torch.arange(hw[0]), torch.arange(hw[1]), indexing='ij')
    cell = (ys * 7 // hw[0]) * 7 + xs * 7 // hw[1]
    diag = torch.nn.functional.one_hot(cell.flatten(), 49).float()  # (N, 49)
    noise = torch.randn(1, 2, hw[0] * hw[1], 49)
    loss_fn = DiagonalityLoss()
    losses = [loss_fn([noise + a * diag], [hw]).item() for a in (0, 1, 3, 6, 20)]
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 1e-3 < 0.5 < losses[0]


def test_aux_loss_differentiable_switchable_and_never_stale():
    model = tiny_lavit(dp_loss_weight=2.0).train()
    x = torch.randn(2, 3, 40, 40)
    model(x)
    loss = model.pop_aux_losses()['loss_diag']
    loss.backward()
    thetas = [m.theta.weight.grad for m in model.modules() if isinstance(m, LessAttention)]
    assert thetas and all(g is not None and g.abs().sum() > 0 for g in thetas)
    q_grads = [m.q.weight.grad for m in model.modules() if isinstance(m, VanillaAttention)]
    assert all(g is not None and g.abs().sum() > 0 for g in q_grads)
    # weight: half the weight, half the loss
    half = LaViT(arch=dict(TINY), drop_path_rate=0.0, dp_loss_weight=1.0).train()
    half.load_state_dict(model.state_dict())
    half(x)
    torch.testing.assert_close(half.pop_aux_losses()['loss_diag'], loss.detach() / 2)
    # popped once only; an eval forward clears a value stored by a training forward
    assert model.pop_aux_losses() == {}
    model(x)
    model.eval()(x)
    assert model.pop_aux_losses() == {}
    off = LaViT(arch=dict(TINY), dp_loss_weight=0.0).train()
    off(x)
    assert off.pop_aux_losses() == {}


def test_with_cp_same_outputs_and_gradients(checkpoint_calls):
    model = tiny_lavit(out_indices=(1, 3)).train()
    cp_model = tiny_lavit(out_indices=(1, 3), with_cp=True).train()
    cp_model.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 48, 40)
    totals = []
    for m in (model, cp_model):
        outs = m(x)
        total = sum(o.square().mean() for o in outs) + m.pop_aux_losses()['loss_diag']
        total.backward()
        totals.append(total.detach())
    torch.testing.assert_close(totals[0], totals[1])
    assert len(checkpoint_calls) == sum(cp_model.depths)
    for (n, p), q in zip(model.named_parameters(), cp_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=n)


# -- standard API --------------------------------------------------------------------------
def test_arch_errors():
    with pytest.raises(ValueError, match='Unknown LaViT arch'):
        LaViT(arch='xl')
    with pytest.raises(ValueError, match='num_va_layers'):
        LaViT(arch={k: v for k, v in TINY.items() if k != 'num_va_layers'})
    with pytest.raises(ValueError, match='num_va_layers must be in'):
        LaViT(arch=dict(TINY, num_va_layers=[1, 4, 1, 1]))
    with pytest.raises(ValueError, match='num_va_layers must be in'):
        LaViT(arch=dict(TINY), num_va_layers=[0, 1, 1, 1])
    with pytest.raises(ValueError, match='one entry per stage'):
        LaViT(arch='t', num_va_layers=[2, 2, 2])
    with pytest.raises(ValueError, match='divisible'):
        LaViT(arch=dict(TINY, num_heads=[3, 2, 3, 4]))
    for name, depths in (('T', [2, 2, 2, 2]), ('s', [3, 4, 6, 3]), ('B', [3, 4, 18, 3])):
        assert LaViT.resolve_arch(name)['depths'] == depths


def test_frozen_stages_and_layer_depth():
    model = LaViT(arch=dict(TINY), frozen_stages=2).train()
    for name, p in model.named_parameters():
        frozen = name.startswith(('patch_embed', 'stages.0.', 'stages.1.', 'out_norms.0.',
                                  'out_norms.1.'))
        assert p.requires_grad != frozen, name
    assert model.get_layer_depth('backbone.stages.1.attn_downsample.head_mix.weight',
                                 'backbone.') == (3, 11)
    assert model.get_layer_depth('stages.2.blocks.1.attn.theta.weight') == (7, 11)


def test_pretrained_round_trip_and_mismatch(tmp_path):
    src = tiny_lavit()
    path = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    dst = LaViT(arch=dict(TINY), init_cfg=dict(type='Pretrained', checkpoint=path,
                                               prefix='backbone.'))
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    other = LaViT(arch=dict(TINY, num_va_layers=[1, 1, 1, 1]),
                  init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    with pytest.raises(RuntimeError, match='stages.1.blocks.1.attn.q.weight'):
        other.init_weights()


# -- models adding the auxiliary loss --------------------------------------------------------
def classifier(dp_loss_weight):
    return MODELS.build(dict(
        type='mmvit_ext.AuxLossImageClassifier',
        backbone=dict(type='mmvit_ext.LaViT', arch=dict(TINY), drop_path_rate=0.0,
                      dp_loss_weight=dp_loss_weight),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='mmpretrain.LinearClsHead', num_classes=5, in_channels=32)))


def test_classifier_adds_diagonality_loss_under_its_own_key():
    from mmpretrain.models import ImageClassifier
    from mmpretrain.structures import DataSample
    model = classifier(1.0).train()
    assert isinstance(model, ImageClassifier)
    x = torch.randn(2, 3, 40, 40)
    samples = [DataSample().set_gt_label(i) for i in (1, 3)]
    model.backbone(torch.randn(2, 3, 56, 56))  # a stale value must not leak into the loss
    losses = model.loss(x, samples)
    assert set(losses) == {'loss', 'loss_diag'}
    model.backbone(x)
    torch.testing.assert_close(losses['loss_diag'], model.backbone.pop_aux_losses()['loss_diag'])
    total, _ = model.parse_losses(losses)
    torch.testing.assert_close(total, losses['loss'] + losses['loss_diag'])
    assert set(classifier(0.0).train().loss(x, samples)) == {'loss'}


def test_segmentor_switches_diagonality_loss_on():
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    head = dict(type='mmseg.FCNHead', in_channels=32, channels=8, num_convs=1, num_classes=3,
                in_index=3, norm_cfg=None)
    for weight, keys in ((1.0, {'loss_diag'}), (0.0, set())):
        model = MODELS.build(dict(
            type='mmvit_ext.AuxLossEncoderDecoder',
            backbone=dict(type='mmvit_ext.LaViT', arch=dict(TINY), out_indices=(0, 1, 2, 3),
                          dp_loss_weight=weight),
            decode_head=head)).train()
        sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 3, (1, 32, 32))))
        sample.set_metainfo(dict(img_shape=(32, 32), pad_shape=(32, 32)))
        losses = model.loss(torch.randn(1, 3, 32, 32), [sample])
        assert {k for k in losses if k == 'loss_diag'} == keys
        assert 'decode.loss_ce' in losses


def test_aux_loss_model_needs_a_backbone_with_aux_losses():
    with pytest.raises(TypeError, match='pop_aux_losses'):
        MODELS.build(dict(type='mmvit_ext.AuxLossImageClassifier',
                          backbone=dict(type='mmpretrain.ResNet', depth=18),
                          head=dict(type='mmpretrain.LinearClsHead', num_classes=5,
                                    in_channels=512)))
