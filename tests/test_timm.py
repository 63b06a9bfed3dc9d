"""The four families through ``timm.create_model``."""
import pytest
import torch

timm = pytest.importorskip('timm')
import mmvit_ext.models.timm_models  # noqa: E402,F401  registers the timm names
from mmvit_ext.models.timm_models import TIMM_VARIANTS  # noqa: E402

SMALLEST = ['rmt_t', 'groupmixformer_m', 'pale_t', 'lavit_t']


def test_every_variant_is_registered():
    assert set(timm.list_models('rmt_*') + timm.list_models('groupmixformer_*')
               + timm.list_models('pale_*') + timm.list_models('lavit_*')) == set(TIMM_VARIANTS)


@pytest.mark.parametrize('name', SMALLEST)
def test_classifier_interface(name):
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        assert logits.shape == (2, 10)
        assert feats.shape[:2] == (2, model.feature_info[-1]['num_chs'])
        assert pooled.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(feats), logits)
        final, stages = model.forward_intermediates(x)
        assert [s.shape[1] for s in stages] == [f['num_chs'] for f in model.feature_info]
        torch.testing.assert_close(final, feats)
    assert model.get_classifier().out_features == 10
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)


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
