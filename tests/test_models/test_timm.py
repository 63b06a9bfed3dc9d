"""The four families through ``timm.create_model``."""
import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip('timm')
import mmvit_ext.models.timm_models  # noqa: E402,F401  registers the timm names
from mmvit_ext.models.families import families  # noqa: E402
from mmvit_ext.models.timm_models import TIMM_VARIANTS  # noqa: E402

# the first variant of each family (they are declared smallest first)
SMALLEST = [next(iter(family.timm_variants)) for family in families()]


def test_every_variant_is_registered():
    assert set(name for family in families()
               for name in timm.list_models(f'{family.name}_*')) == set(TIMM_VARIANTS)


@pytest.mark.parametrize('name', SMALLEST)
def test_classifier_interface(name):
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        assert logits.shape == (2, 10)
        assert feats.shape[:2] == (2, model.feature_info[-1]['num_chs']) == (2, model.num_features)
        assert pooled.shape == (2, model.head_hidden_size)
        torch.testing.assert_close(model.forward_head(feats), logits)
        final, stages = model.forward_intermediates(x)
        assert [s.shape[1] for s in stages] == [f['num_chs'] for f in model.feature_info]
        torch.testing.assert_close(final, feats)
    assert model.get_classifier().out_features == 10
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled)


def test_rmt_head_projects_the_last_stage():
    """RMT's head: per-token Linear(512, 1024), BN and Swish before the pooling (the official
    ``VisRetNet``); ``num_features`` is the width of the map, ``head_hidden_size`` the
    projection's."""
    model = timm.create_model('rmt_t', num_classes=0)
    assert model.num_features == model.backbone.arch['embed_dims'][-1]
    assert model.head_hidden_size == model.neck.proj.out_features != model.num_features


@pytest.mark.parametrize('name', SMALLEST)
def test_unpooled_head_is_the_map_before_the_pooling(name):
    """global_pool='': the pre-logits map (B, head_hidden_size, H, W) and, with a classifier, the
    logits at every position; their means over the positions are the pooled outputs (the
    pooling is the last operation before the linear classifier)."""
    pooled = timm.create_model(name, num_classes=7).eval()
    unpooled = timm.create_model(name, num_classes=7, global_pool='')
    unpooled.load_state_dict(pooled.state_dict())
    unpooled.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = pooled.forward_features(x)
        pre_logits = unpooled.forward_head(feats, pre_logits=True)
        assert pre_logits.shape == (2, pooled.head_hidden_size, 2, 2)
        torch.testing.assert_close(pre_logits.mean((2, 3)),
                                   pooled.forward_head(feats, pre_logits=True))
        dense = unpooled(x)
        assert dense.shape == (2, 7, 2, 2)
        torch.testing.assert_close(dense.mean((2, 3)), pooled(x))
        pooled.reset_classifier(0, '')
        torch.testing.assert_close(pooled(x), pre_logits)
    with pytest.raises(AssertionError, match='Global pooling'):
        pooled.reset_classifier(0, 'max')


@pytest.mark.parametrize('name', SMALLEST)
def test_device_dtype_and_in_chans(name):
    with torch.device('meta'):  # explicit arguments win over the default device
        model = timm.create_model(name, num_classes=3, in_chans=1, device='cpu',
                                  dtype=torch.float64).eval()
    tensors = list(model.parameters()) + list(model.buffers())
    assert {(t.device.type, t.dtype) for t in tensors if t.is_floating_point()} == \
        {('cpu', torch.float64)}
    assert model.in_chans == 1
    first_conv = model.get_submodule(model.pretrained_cfg['first_conv'])
    assert first_conv.in_channels == 1 and first_conv.stride == (2, 2) or \
        first_conv.stride == (4, 4)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64, dtype=torch.float64)).dtype == torch.float64
    meta = timm.create_model(name, device='meta')
    assert all(t.is_meta for t in list(meta.parameters()) + list(meta.buffers()))
    meta.reset_classifier(5)
    assert meta.get_classifier().weight.is_meta


@pytest.mark.parametrize('name', SMALLEST)
def test_pure_bfloat16_forward(name):
    """A model converted to bfloat16 (not under autocast) computes in bfloat16, close to fp32."""
    model = timm.create_model(name, num_classes=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        out = model.to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.1, atol=0.1)


@pytest.mark.parametrize('name', SMALLEST)
def test_grad_checkpointing(name, checkpoint_calls):
    """set_grad_checkpointing() checkpoints every backbone block in training, same gradients."""
    model = timm.create_model(name, num_classes=4, drop_path_rate=0.).train()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).sum().backward()
    assert len(checkpoint_calls) == sum(model.backbone.depths)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], msg=n)


def test_intermediates_norm_is_the_heads_norm():
    """norm=True: the last stage's map through the head's final norm (Pale: LayerNorm over the
    channels); RMT's head projects before its norm, so its maps stay raw. The final map is
    forward_features' either way."""
    x = torch.randn(1, 3, 64, 64)
    for name in ('pale_t', 'rmt_t'):
        model = timm.create_model(name).eval()
        with torch.no_grad():
            feats = model.forward_features(x)
            final, maps = model.forward_intermediates(x, indices=[2, 3], norm=True)
            raw = model.forward_intermediates(x, indices=[2, 3], intermediates_only=True)
        torch.testing.assert_close(final, feats)
        torch.testing.assert_close(maps[0], raw[0])
        if name == 'pale_t':
            ln = model.neck.norm
            expected = F.layer_norm(feats.permute(0, 2, 3, 1), ln.normalized_shape, ln.weight,
                                    ln.bias, ln.eps).permute(0, 3, 1, 2)
            torch.testing.assert_close(maps[1], expected)
        else:
            torch.testing.assert_close(maps[1], raw[1])


@pytest.mark.parametrize('name', SMALLEST)
def test_prune_intermediate_layers(name):
    """Pruning to stage 1 removes stages 2-3 and the neck/head; the kept stages give the unpruned
    model's maps."""
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        assert model.prune_intermediate_layers([0, -3], prune_norm=True) == [0, 1]
        outs = model.forward_intermediates(x, intermediates_only=True)
        torch.testing.assert_close(outs, taps[:2])
        torch.testing.assert_close(model.forward_features(x), taps[1])
        torch.testing.assert_close(model(x), taps[1])  # no pooling, no classifier left
    assert len(model.backbone.stages) == len(model.feature_info) == 2
    assert model.num_features == model.head_hidden_size == model.feature_info[-1]['num_chs']
    assert not [k for k in model.state_dict()
                if k.startswith(('neck.', 'head.', 'backbone.stages.2', 'backbone.stages.3'))]


@pytest.mark.parametrize('name', SMALLEST)
def test_initialised_as_by_tools_train(name):
    """From the same seed, a timm model holds the parameters of the config's mmpretrain
    classifier after its init_weights() (what tools/train.py runs before training)."""
    import mmvit_ext
    torch.manual_seed(0)
    classifier = mmvit_ext.get_model(TIMM_VARIANTS[name])
    classifier.init_weights()
    torch.manual_seed(0)
    model = timm.create_model(name)
    expected = classifier.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize('name', sorted(TIMM_VARIANTS))
def test_features_only_every_variant(name):
    model = timm.create_model(name, features_only=True, out_indices=(1, 3)).eval()
    channels = model.feature_info.channels()
    assert model.feature_info.reduction() == [8, 32]
    assert not any(k.startswith(('neck.', 'head.')) for k in model.state_dict())
    if name in SMALLEST:  # a forward for one variant per family keeps the test short
        with torch.no_grad():
            outs = model(torch.randn(1, 3, 64, 64))
        assert [o.shape[1:] for o in outs] == [(channels[0], 8, 8), (channels[1], 2, 2)]


@pytest.mark.parametrize('name', SMALLEST)
def test_pretrained_from_an_mmpretrain_checkpoint(name, tmp_path):
    """``pretrained=True`` with a local file loads an mmpretrain classifier's keys strictly."""
    import mmvit_ext
    classifier = mmvit_ext.get_model(mmvit_ext.models.timm_models.TIMM_VARIANTS[name],
                                     head=dict(num_classes=5))
    with torch.no_grad():
        for p in classifier.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / 'cls.pth'
    torch.save({'state_dict': classifier.state_dict(), 'meta': {}}, path)
    model = timm.create_model(name, pretrained=True, num_classes=5,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=5)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), classifier(x, mode='tensor'))
    features = timm.create_model(name, pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=dict(file=str(path), num_classes=5))
    with torch.no_grad():
        torch.testing.assert_close(features.eval()(x)[-1], classifier.backbone(x)[-1])


def test_pretrained_without_a_file_is_a_clear_error():
    with pytest.raises(RuntimeError, match='No pretrained weights'):
        timm.create_model('rmt_t', pretrained=True)
