"""Attention visualisation: the recorded weights against the oracles, the shape of the RMT prior
and the Pale groups, and tools/visualization/vis_attention.py on demo checkpoints."""
import math
import os.path as osp

import numpy as np
import pytest
import torch

from mmvit_ext.models.backbones import RMT, GroupMixFormer, LaViT, PaleTransformer
from mmvit_ext.models.backbones.groupmixformer import FAMILY as GMF_FAMILY
from mmvit_ext.models.backbones.lavit import FAMILY as LAVIT_FAMILY
from mmvit_ext.models.backbones.pale import FAMILY as PALE_FAMILY
from mmvit_ext.models.backbones.rmt import FAMILY as RMT_FAMILY
from mmvit_ext.models.layers.less_attention import LessAttention
from mmvit_ext.oracles import groupmixformer as gmf_oracle
from mmvit_ext.oracles import lavit as lavit_oracle
from mmvit_ext.oracles import pale as pale_oracle
from mmvit_ext.oracles import rmt as rmt_oracle
from mmvit_ext.visualization import record_attention

from tests.conftest import REPO, load_tool

RMT_TINY = RMT_FAMILY.tiny_arch
# the families' tiny archs with the block layout the record checks below expect: one block per
# stage; LaViT with two LA layers in a row in stage 0
PALE_TINY = dict(PALE_FAMILY.tiny_arch, depths=[1, 1, 1, 1])
GMF_TINY = dict(GMF_FAMILY.tiny_arch, depths=[1, 1, 1, 1])
LAVIT_TINY = dict(LAVIT_FAMILY.tiny_arch, depths=[3, 2, 1, 1], num_va_layers=[1, 1, 1, 1])
# 44 x 36 input: stage-1 maps of 11 x 9, not multiples of the pale size (padded groups)
IMAGE = (44, 36)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def randomise_norms(model):
    """Non-trivial BatchNorm statistics and LaViT transforms, so that a wrong formula shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
            elif isinstance(m, LessAttention):
                m.theta.weight.add_(0.2 * torch.randn_like(m.theta.weight))
                m.theta.bias.normal_()
                m.psi.weight.add_(0.3 * torch.randn_like(m.psi.weight))
    return model.eval()


def recorded(backbone):
    x = torch.randn(2, 3, *IMAGE)
    with torch.no_grad(), record_attention(backbone) as rec:
        backbone(x)
    return rec


def rows_sum_to_one(weights):
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))


# -- recorded weights = the oracles' softmax ----------------------------------------------------
def test_rmt_weights_match_oracle():
    backbone = randomise_norms(RMT(RMT_TINY, out_indices=(0, 1, 2, 3)))
    oracle = rmt_oracle.OracleBackbone(backbone).net
    rec = recorded(backbone)
    assert [(r.stage, r.block, r.kind) for r in rec.records] == [
        (0, 0, 'rmt_decomposed'), (1, 0, 'rmt_full'), (2, 0, 'rmt_decomposed'),
        (2, 1, 'rmt_decomposed'), (3, 0, 'rmt_full')]
    for record in rec.records:
        layer = oracle.layers[record.stage]
        retention = layer.blocks[record.block].retention
        H, W = record.hw
        (sin, cos), masks = layer.Relpos(H, W, layer.chunkwise)
        q, k, _, _ = retention.qkv(record.inputs['x'], sin, cos)  # oracle: (B, N, H, W, d)
        weights = record.weights()
        if record.kind == 'rmt_full':
            scores = q.flatten(2, 3) @ k.flatten(2, 3).transpose(-1, -2) + masks
            expected = torch.softmax(scores, dim=-1)
            torch.testing.assert_close(weights['attention'], expected)
            rows_sum_to_one(weights['attention'])
        else:
            mask_h, mask_w = masks
            qw, kw = q.transpose(1, 2), k.transpose(1, 2)
            expected_w = torch.softmax(qw @ kw.transpose(-1, -2) + mask_w, dim=-1)
            qh, kh = q.permute(0, 3, 1, 2, 4), k.permute(0, 3, 1, 2, 4)
            expected_h = torch.softmax(qh @ kh.transpose(-1, -2) + mask_h, dim=-1)
            torch.testing.assert_close(weights['w_pass'], expected_w)
            torch.testing.assert_close(weights['h_pass'], expected_h)
            rows_sum_to_one(weights['w_pass'])
            # the effective map of a query: the H pass over the W-pass outputs, sums to 1
            y, x = H // 2, W - 2
            effective = record.weights(query=(y, x))['effective']
            v = torch.randn(2, H, W)  # one value channel: both passes applied explicitly
            v1 = torch.einsum('byqk,byk->byq', expected_w[:, :, 0], v)
            out = torch.einsum('bk,bk->b', expected_h[:, x, 0, y], v1[:, :, x])
            torch.testing.assert_close((effective[:, 0] * v).sum((-1, -2)), out)
            torch.testing.assert_close(effective.sum((-1, -2)), torch.ones(2, effective.shape[1]))
        # the plain baseline: the same q, k (oracle k is pre-scaled) without the decay
        plain = torch.softmax(q.flatten(2, 3) @ k.flatten(2, 3).transpose(-1, -2), dim=-1)
        torch.testing.assert_close(weights['plain'], plain)


def test_pale_weights_match_oracle_and_stay_in_the_groups():
    backbone = randomise_norms(PaleTransformer(PALE_TINY, out_indices=(0, 1, 2, 3)))
    rec = recorded(backbone)
    assert len(rec.records) == 4
    for record in rec.records:
        attn, x = record.module, record.inputs['x']
        B, H, W, C = x.shape
        heads, d = attn.num_heads // 2, attn.head_dims
        nchw = x.permute(0, 3, 1, 2)
        q, k = (m(nchw).flatten(2).transpose(1, 2).reshape(B, H * W, 2, heads, d)
                for m in (attn.q, attn.k))
        eye = torch.eye(H * W).expand(B, heads, H * W, H * W)  # weights @ I = the weights
        ys = torch.arange(H).repeat_interleave(W)
        xs = torch.arange(W).repeat(H)
        allowed = [pale_oracle.interlaced_group_mask(H, attn.pale_size[0])[ys][:, ys],
                   pale_oracle.interlaced_group_mask(W, attn.pale_size[1])[xs][:, xs]]
        weights = record.weights()
        for branch, name in enumerate(('row', 'column')):
            expected = pale_oracle.masked_attention(q[:, :, branch].transpose(1, 2),
                                                    k[:, :, branch].transpose(1, 2), eye,
                                                    allowed[branch])
            torch.testing.assert_close(weights[name], expected)
            rows_sum_to_one(weights[name])
        # one query: non-zero exactly on its interlaced row group (row branch) and column
        # group (column branch)
        y, x = H - 1, 1
        one = record.weights(query=(y, x))
        groups_r = math.ceil(H / min(attn.pale_size[0], H))
        groups_c = math.ceil(W / min(attn.pale_size[1], W))
        in_row_group = (torch.arange(H)[:, None] % groups_r == y % groups_r).expand(H, W)
        in_col_group = (torch.arange(W)[None] % groups_c == x % groups_c).expand(H, W)
        for name, group in (('row', in_row_group), ('column', in_col_group)):
            maps = one[name].view(B, heads, H, W)
            assert torch.equal(maps > 0, group.expand_as(maps)), (record.stage, name)


def test_group_mix_weights_match_oracle():
    backbone = randomise_norms(GroupMixFormer(GMF_TINY, out_indices=(0, 1, 2, 3)))
    rec = recorded(backbone)
    assert len(rec.records) == 4
    for record in rec.records:
        att = gmf_oracle.OracleGroupMixAttention(record.module).att.eval()
        x = record.inputs['x']
        B, H, W, C = x.shape
        N = H * W
        with torch.no_grad():  # the official EfficientAtt forward up to its softmax
            qkv = att.qkv(x.reshape(B, N, C)).reshape(B, N, 3, C).permute(2, 0, 1, 3)
            qkv, _ = att.aggregator(qkv.reshape(3 * B, N, C), (H, W), att.num_heads)
            q, k, v = qkv[0], qkv[1], qkv[2]
            k_softmax = k.softmax(dim=2)
            expected = att.scale * q @ k_softmax.transpose(-1, -2)
        weights = record.weights()
        torch.testing.assert_close(weights['key_softmax'], k_softmax)
        # each key channel's softmax over the tokens sums to 1
        torch.testing.assert_close(weights['key_softmax'].sum(2), torch.ones(B, 8, C // 10))
        torch.testing.assert_close(weights['attention'], expected)
        # the weights reproduce the official factorised term scale * q (softmax(k)^T v)
        eff = torch.einsum('bhnk,bhkv->bhnv', q, torch.einsum('bhnk,bhnv->bhkv', k_softmax, v))
        torch.testing.assert_close(weights['attention'] @ v, att.scale * eff)
        query = (H // 2, 1)
        torch.testing.assert_close(record.weights(query)['attention'][:, :, 0],
                                   expected[:, :, query[0] * W + query[1]])


def test_lavit_weights_match_oracle_and_the_module_logits():
    backbone = randomise_norms(LaViT(LAVIT_TINY, drop_path_rate=0., out_indices=(0, 1, 2, 3)))
    returned = []  # the logits the fast path hands to the next layer
    hooks = [m.attn.register_forward_hook(lambda mod, args, out: returned.append(out[1]))
             for s in backbone.stages for m in s.blocks]
    rec = recorded(backbone)
    for h in hooks:
        h.remove()
    assert [r.kind for r in rec.records] == ['lavit_va', 'lavit_la', 'lavit_la', 'lavit_va',
                                             'lavit_la', 'lavit_va', 'lavit_va']
    for record, fast_logits in zip(rec.records, returned):
        inputs = record.inputs
        if record.kind == 'lavit_va':
            _, logits = lavit_oracle.OracleVanillaAttention(record.module)(
                inputs['x'], inputs['hw'], inputs.get('residual_logits'))
        else:
            _, logits = lavit_oracle.OracleLessAttention(record.module)(
                inputs['x'], inputs['hw'], inputs['prev_logits'])
        weights = record.weights()['attention']
        torch.testing.assert_close(weights, lavit_oracle.softmax(logits))
        torch.testing.assert_close(weights, fast_logits.softmax(-1))
        rows_sum_to_one(weights)


# -- the RMT prior ------------------------------------------------------------------------------
def test_rmt_prior_peaks_at_the_query_and_decays_with_manhattan_distance():
    backbone = RMT(RMT_TINY, out_indices=(0, 1, 2, 3)).eval()
    record = recorded(backbone).get(0, 0)
    H, W = record.hw
    query = (3, 5)
    prior = record.weights(query)['prior']
    assert prior.shape == (2, H, W)
    dist = (torch.arange(H)[:, None] - query[0]).abs() + (torch.arange(W)[None] - query[1]).abs()
    gammas = torch.exp(record.rel_pos.decay)
    for n in range(2):
        assert prior[n, 3, 5] == prior[n].max() == 1
        torch.testing.assert_close(prior[n], gammas[n] ** dist.float())
        values = [prior[n][dist == r] for r in range(int(dist.max()) + 1)]
        for r in range(len(values) - 1):  # constant on each Manhattan ring, strictly falling
            assert torch.all(values[r] == values[r][0])
            assert values[r + 1].max() < values[r].min()
    assert gammas[0] < gammas[1]  # the heads decay at different rates


# -- refusals -----------------------------------------------------------------------------------
def test_record_refuses_fused_and_training_models():
    from mmvit_ext.models.fused import fuse_for_cpu_inference
    backbone = RMT(RMT_TINY).eval()
    with pytest.raises(RuntimeError, match='eval-mode'):
        with record_attention(backbone.train()):
            pass
    fused = fuse_for_cpu_inference(RMT(RMT_TINY).eval())
    if any(type(m).__name__.startswith('Fused') for m in fused.modules()):
        with pytest.raises(TypeError, match='fused for CPU inference'):
            with record_attention(fused):
                pass
    with pytest.raises(TypeError, match='no backbone of mmvit_ext'):
        with record_attention(torch.nn.Linear(2, 2)):
            pass


# -- the tool on demo checkpoints ---------------------------------------------------------------
@pytest.fixture(scope='module')
def demo_image(tmp_path_factory):
    """One image of the demo classification set (a 64x64 JPEG)."""
    from mmvit_ext.datasets import generate_demo_datasets
    root = tmp_path_factory.mktemp('vis')
    generate_demo_datasets(str(root / 'demo'), tasks=('cls', ))
    return str(root / 'demo' / 'cls' / 'val' / 'circle' / '0000.jpg')


def demo_checkpoint(config, path):
    """A checkpoint of the freshly built (initialised, untrained) model of ``config``."""
    import importlib
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    importlib.import_module(f'{cfg.default_scope}.utils').register_all_modules(True)
    registry = importlib.import_module(f'{cfg.default_scope}.registry').MODELS
    torch.manual_seed(0)
    model = registry.build(cfg.model)
    model.init_weights()
    randomise_norms(model)  # LA layers away from the identity: consecutive layers differ
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, str(path))
    return str(path)


def expected_record(config, checkpoint, image, stage, block):
    """The network input and the record of (stage, block), made in-process as the tool does."""
    tool = load_tool('visualization/vis_attention.py')
    cfg = tool.load_config(config)
    model = tool.build_model(cfg, checkpoint)
    inputs, picture = tool.preprocess(cfg, model, image)
    with torch.no_grad(), record_attention(model) as rec:
        model.backbone(inputs)
    return picture, rec, rec.get(stage, block)


def png_size(path):
    from PIL import Image
    with Image.open(path) as img:
        return img.size


@pytest.mark.parametrize('family', ['rmt', 'pale', 'groupmixformer', 'lavit'])
def test_tool_draws_the_recorded_weights(family, demo_image, tmp_path, capsys):
    from mmvit_ext.visualization.figures import figure_size
    config = osp.join(REPO, 'configs', 'demo', f'{family}-nano_1xb32_demo-cls.py')
    checkpoint = demo_checkpoint(config, tmp_path / 'demo.pth')
    out = tmp_path / 'out'
    query = (40, 21)  # network-input pixel -> stage-0 token (5, 10), stride 4
    tool = load_tool('visualization/vis_attention.py')
    tool.main([config, checkpoint, demo_image, '--query', *map(str, query), '--out', str(out),
               '--featmap'])
    written = capsys.readouterr().out.split()
    picture, rec, record = expected_record(config, checkpoint, demo_image, 0, 0)
    assert picture.shape == (64, 64, 3)
    token = (5, 10)
    weights = record.weights(query=token)
    H, W = record.hw
    assert (H, W) == (16, 16)

    def drawn(name):
        path = str(out / f'{family}_{name}')
        assert path + '.png' in written
        return np.load(path + '.npz'), png_size(path + '.png')

    if family == 'rmt':  # decomposed stage 0, 2 heads
        prior, size = drawn('s0_b0_prior')
        assert size == figure_size(1, 2)
        for n in range(2):
            np.testing.assert_allclose(prior[f'map{n}'], weights['prior'][n].numpy())
        attention, size = drawn('s0_b0_attention')
        assert size == figure_size(2, 3)
        w_map = np.zeros((H, W), np.float32)
        w_map[token[0]] = weights['w_pass'][0, token[0], 1, token[1]].numpy()
        np.testing.assert_allclose(attention['map3'], w_map)  # head 1: W pass
        np.testing.assert_allclose(attention['map5'], weights['effective'][0, 1].numpy())
        field, size = drawn('s0_b0_receptive_field')
        assert size == figure_size(2, 2)
        np.testing.assert_allclose(field['map2'], weights['plain'][0, 0, 0].view(H, W).numpy())
    elif family == 'pale':  # 2 heads: one per branch
        attention, size = drawn('s0_b0_attention')
        assert size == figure_size(2, 2)
        assert list(attention['titles']) == ['row group of the query', 'head 0 (row branch)',
                                             'column group of the query',
                                             'head 1 (column branch)']
        np.testing.assert_allclose(attention['map1'], weights['row'][0, 0, 0].view(H, W).numpy())
        np.testing.assert_allclose(attention['map3'],
                                   weights['column'][0, 0, 0].view(H, W).numpy())
        np.testing.assert_array_equal(attention['map0'] > 0, attention['map1'] > 0)
    elif family == 'groupmixformer':  # 8 heads: 4 segments x 2
        attention, size = drawn('s0_b0_attention')
        assert size == figure_size(2, 4)
        for i, n in enumerate((0, 2, 4, 6, 1, 3, 5, 7)):
            np.testing.assert_allclose(attention[f'map{i}'],
                                       weights['attention'][0, n, 0].view(H, W).numpy())
    else:  # 3 blocks (VA, LA, LA) x 2 heads over 7x7 keys
        from mmvit_ext.models.losses.diagonality_loss import diagonality_loss
        from mmvit_ext.visualization.attention_weights import attention_similarity
        attention, size = drawn('s0_attention')
        assert size == figure_size(3, 2)
        layers = [r.weights()['attention'] for r in rec.stage(0)]
        for i, (j, n) in enumerate([(j, n) for j in range(3) for n in range(2)]):
            np.testing.assert_allclose(attention[f'map{i}'],
                                       layers[j][0, n, token[0] * W + token[1]].view(7, 7).numpy())
        saturation, size = drawn('s0_saturation')
        assert size == figure_size(1, 2)
        np.testing.assert_allclose(saturation['map0'][1], [float(diagonality_loss(a, (H, W)))
                                                           for a in layers], rtol=1e-5)
        np.testing.assert_allclose(saturation['map1'][1], [
            float(attention_similarity(a, b).mean()) for a, b in zip(layers, layers[1:])],
            rtol=1e-5)
        assert saturation['map1'][1].min() < 0.9999  # the LA transforms changed the attention
    for i in range(4):  # feature maps of every stage, at the network input's size
        featmap, size = drawn(f'featmap_s{i}')
        assert size == (64, 64)
        assert featmap['featmap'].shape[-2:] == (16 // 2**i, 16 // 2**i)


@pytest.mark.slow  # builds a detector and a segmentor
@pytest.mark.parametrize('config', ['mask-rcnn_rmt-nano_fpn_demo-coco.py',
                                    'fpn_rmt-nano_1xb8_demo-ade.py'])
def test_tool_on_detection_and_segmentation_configs(config, demo_image, tmp_path, capsys):
    config = osp.join(REPO, 'configs', 'demo', config)
    checkpoint = demo_checkpoint(config, tmp_path / 'demo.pth')
    tool = load_tool('visualization/vis_attention.py')
    tool.main([config, checkpoint, demo_image, '--stage', '3', '--featmap', '--topk', '4',
               '--out', str(tmp_path / 'out')])
    written = capsys.readouterr().out.split()
    picture, _, record = expected_record(config, checkpoint, demo_image, 3, 0)
    assert record.kind == 'rmt_full'
    assert [osp.basename(p) for p in written] == [
        'rmt_s3_b0_prior.png', 'rmt_s3_b0_attention.png', 'rmt_s3_b0_receptive_field.png',
        'rmt_featmap_s3.png']
    # the 4 strongest channels side by side, each at the network input's size
    assert png_size(written[-1]) == (4 * picture.shape[1], picture.shape[0])


def test_tool_refuses_unsafe_and_mismatched_checkpoints(demo_image, tmp_path):
    import functools
    config = osp.join(REPO, 'configs', 'demo', 'rmt-nano_1xb32_demo-cls.py')
    state_dict = torch.load(demo_checkpoint(config, tmp_path / 'ok.pth'),
                            weights_only=True)['state_dict']
    torch.save({'state_dict': state_dict, 'meta': {'hook': functools.partial(print)}},
               str(tmp_path / 'unsafe.pth'))
    state_dict.pop('head.fc.weight')
    torch.save({'state_dict': state_dict}, str(tmp_path / 'partial.pth'))
    tool = load_tool('visualization/vis_attention.py')
    for name, message in (('unsafe.pth', 'functools.partial'), ('partial.pth', 'head.fc.weight')):
        with pytest.raises(SystemExit, match=message):
            tool.main([config, str(tmp_path / name), demo_image, '--out', str(tmp_path / 'out')])
        assert not (tmp_path / 'out').exists()
