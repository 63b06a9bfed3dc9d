"""The training recipes reproduce the official code / cited protocols, and the launcher guards the
linear scaling rule (one test per item of the recipe-fidelity audit)."""
import glob
import importlib
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from mmvit_ext.utils.batch_scaling import apply_batch_scaling, scaled_ema_momentum
from mmvit_ext.converters.ema import extract_weights, select_weights
from mmvit_ext.models.backbones.groupmixformer import FAMILY as GMF_FAMILY
from mmvit_ext.models.families import families

from tests.conftest import REPO, run_tool

TRAIN = osp.join(REPO, 'tools', 'train.py')
SELECT_EMA = osp.join(REPO, 'tools', 'model_converters', 'select_ema_weights.py')
FAMILIES = tuple(family.name for family in families())


def _cfg(rel_path):
    return Config.fromfile(osp.join(REPO, 'configs', rel_path))


def _configs(pattern):
    paths = sorted(glob.glob(osp.join(REPO, 'configs', pattern)))
    assert paths, pattern
    return paths


def _build(cfg):
    """``cfg.model`` built in its toolbox, without checkpoint loading, SyncBN reverted."""
    scope = cfg.default_scope
    init_default_scope(scope)
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    cfg.model.backbone.init_cfg = None
    registry = importlib.import_module(f'{scope}.registry').MODELS
    return revert_sync_batchnorm(registry.build(cfg.model))


def _param_settings(model, optim_wrapper_cfg):
    """``{parameter name: (lr, weight_decay)}`` of the optimizer the toolbox builds."""
    from mmengine.optim import build_optim_wrapper
    wrapper = build_optim_wrapper(model, optim_wrapper_cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    settings = {}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            settings[names[id(param)]] = (group['lr'], group['weight_decay'])
    assert len(settings) == len(names)
    return settings


# -- 1. GroupMixFormer 384 fine-tuning ---------------------------------------------------------
def _tiny_gmf(cfg):
    arch = GMF_FAMILY.tiny_arch
    cfg.model.backbone.arch = arch
    cfg.model.backbone.drop_path_rate = 0.0
    cfg.model.neck.in_channels = cfg.model.head.in_channels = arch['embed_dims'][-1]
    return cfg


@pytest.mark.parametrize('variant', ['s', 'l'])
def test_groupmixformer_384_finetune_loads_the_whole_224_classifier(variant, tmp_path,
                                                                     monkeypatch):
    """As the official ``--pretrained`` fine-tuning: backbone, ``norm4`` neck BN (weights and
    running statistics) and head all start from the 224 classifier checkpoint."""
    from mmengine.runner import Runner
    monkeypatch.chdir(tmp_path)
    classifier = _build(_tiny_gmf(_cfg(f'groupmixformer/groupmixformer-{variant}_8xb128_in1k.py')))
    torch.manual_seed(0)
    trained = {k: torch.randn_like(v) if v.is_floating_point() else v + 3
               for k, v in classifier.state_dict().items()}  # unlike any initialisation
    ckpt = tmp_path / 'checkpoints' / f'groupmixformer-{variant}_in1k.pth'
    ckpt.parent.mkdir()
    torch.save({'meta': {}, 'state_dict': trained}, ckpt)

    cfg = _tiny_gmf(_cfg(f'groupmixformer/groupmixformer-{variant}_8xb64_in1k-384px.py'))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()  # what Runner.train() does before load_or_resume()
    runner.load_or_resume()
    loaded = runner.model.state_dict()
    for part in ('neck.norm.', 'head.fc.', 'backbone.'):
        keys = [k for k in trained if k.startswith(part)]
        assert keys, part
        for key in keys:
            torch.testing.assert_close(loaded[key], trained[key], rtol=0, atol=0, msg=key)


def test_groupmixformer_384_test_pipeline_is_the_official_center_crop(tmp_path):
    """Official TEST.CROP=True: bicubic resize of the short side to int(256 / 224 * 384) = 438,
    then the centre 384 x 384 (not a direct 384 x 384 resize)."""
    from mmpretrain.registry import TRANSFORMS
    from PIL import Image
    init_default_scope('mmpretrain')
    importlib.import_module('mmpretrain.utils').register_all_modules(init_default_scope=False)
    rgb = np.random.default_rng(0).integers(0, 256, (500, 620, 3), dtype=np.uint8)
    path = str(tmp_path / 'img.png')
    Image.fromarray(rgb).save(path)
    short, crop = int(256 / 224 * 384), 384
    resized = np.asarray(Image.fromarray(rgb).resize((int(short * 620 / 500), short),
                                                     Image.BICUBIC))
    top, left = round((resized.shape[0] - crop) / 2), round((resized.shape[1] - crop) / 2)
    expected = resized[top:top + crop, left:left + crop]
    for variant in ('s', 'l'):
        cfg = _cfg(f'groupmixformer/groupmixformer-{variant}_8xb64_in1k-384px.py')
        for loader in ('val_dataloader', 'test_dataloader'):
            results = dict(img_path=path)
            for step in cfg[loader].dataset.pipeline[:-1]:  # all but PackInputs
                results = TRANSFORMS.build(step)(results)
            np.testing.assert_array_equal(results['img'][..., ::-1], expected)  # loaded as BGR


# -- 2. LaViT follows the PVTv2 protocol --------------------------------------------------------
def test_lavit_detection_optimizers_are_pvtv2s():
    """PVTv2: Mask R-CNN 1x AdamW 2e-4 / wd 1e-4 and RetinaNet 1e-4 / wd 1e-4 on every
    parameter; Mask R-CNN and Cascade 3x+MS 1e-4 / wd 0.05 with no decay on norms."""
    mask_rcnn = _build(_cfg('lavit/mask-rcnn_lavit-t_fpn_1x_coco.py'))
    expected = {
        'mask-rcnn_lavit-t_fpn_1x_coco.py': (mask_rcnn, 2e-4, 1e-4, 1e-4),
        'mask-rcnn_lavit-t_fpn_ms-3x_coco.py': (mask_rcnn, 1e-4, 0.05, 0.0),
        'retinanet_lavit-t_fpn_1x_coco.py': (None, 1e-4, 1e-4, 1e-4),
        'cascade-mask-rcnn_lavit-t_fpn_ms-3x_coco.py': (None, 1e-4, 0.05, 0.0),
    }
    for name, (model, lr, decay, norm_decay) in expected.items():
        cfg = _cfg(f'lavit/{name}')
        model = model or _build(_cfg(f'lavit/{name}'))
        init_default_scope('mmdet')
        settings = _param_settings(model, cfg.optim_wrapper)
        norms = [n for n in settings if 'norm' in n]
        assert norms and len(norms) < len(settings)
        for param, (got_lr, got_decay) in settings.items():
            want = norm_decay if 'norm' in param else decay
            assert (got_lr, got_decay) == pytest.approx((lr, want), rel=1e-9), (name, param)
        for variant in 'sb':  # the variants inherit the recipe
            assert _cfg(f'lavit/{name.replace("lavit-t", f"lavit-{variant}")}').optim_wrapper \
                == cfg.optim_wrapper


def test_lavit_dense_drop_path_is_pvtv2s_and_imagenet_uses_repeated_augmentation():
    dense = [p for p in _configs('lavit/*.py') if 'in1k' not in p]
    assert len(dense) == 18
    for path in dense:
        assert Config.fromfile(path).model.backbone.drop_path_rate == 0.1, path
    for variant in 'tsb':
        cfg = _cfg(f'lavit/lavit-{variant}_8xb128_in1k.py')
        assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
        # PVTv2-b3 (LaViT-B's skeleton) clips the gradient norm at 1.0, b1/b2 do not clip
        assert cfg.optim_wrapper.get('clip_grad') == (
            dict(max_norm=1.0) if variant == 'b' else None)


# -- 3. Pale ImageNet clips gradients like Swin ---------------------------------------------------
def test_pale_imagenet_clips_the_gradient_norm_at_5():
    from mmengine.optim import build_optim_wrapper
    init_default_scope('mmpretrain')
    importlib.import_module('mmpretrain.utils').register_all_modules(init_default_scope=False)
    for variant in 'tsb':
        cfg = _cfg(f'pale/pale-{variant}_8xb128_in1k.py')
        wrapper = build_optim_wrapper(torch.nn.Linear(4, 4), cfg.optim_wrapper)
        assert wrapper.clip_grad_kwargs == dict(max_norm=5.0), variant


# -- 4. ADE20K: evaluate every 4k (UperNet 8k) and keep the best checkpoint ------------------------
ADE_CONFIGS = _configs('*/*ade20k*.py')


@pytest.mark.parametrize('path', ADE_CONFIGS, ids=[osp.basename(p) for p in ADE_CONFIGS])
def test_ade20k_configs_keep_the_best_checkpoint(path):
    from mmengine.registry import HOOKS
    cfg = Config.fromfile(path)
    interval = 8000 if cfg.train_cfg.max_iters == 160000 else 4000
    assert cfg.train_cfg.max_iters in (80000, 160000)
    hook_cfg = cfg.default_hooks.checkpoint
    assert cfg.train_cfg.val_interval == hook_cfg.interval == interval
    hook = HOOKS.build(hook_cfg)
    assert hook.save_best == ['mIoU'] and hook.rules == ['greater']
    assert hook.max_keep_ckpts == 3
    # the batch the lr was set for, so that --auto-scale-lr works (8 GPUs x 2)
    assert cfg.auto_scale_lr.base_batch_size == 16 == 8 * cfg.train_dataloader.batch_size


def test_ade20k_save_best_key_is_what_the_evaluator_reports():
    from mmseg.registry import METRICS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    init_default_scope('mmseg')
    importlib.import_module('mmseg.utils').register_all_modules(init_default_scope=False)
    cfg = _cfg('rmt/upernet_rmt-s_8xb2-160k_ade20k-512x512.py')
    metric = METRICS.build(cfg.val_evaluator)
    metric.dataset_meta = dict(classes=[str(i) for i in range(150)])
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 4, 4, dtype=torch.long))
    sample.pred_sem_seg = PixelData(data=torch.zeros(1, 4, 4, dtype=torch.long))
    metric.process([], [sample.to_dict()])
    assert cfg.default_hooks.checkpoint.save_best in metric.compute_metrics(metric.results)


@pytest.mark.slow
def test_ade20k_auto_scale_lr_flag_works(tmp_path):
    """Before: `--auto-scale-lr` exited for want of `auto_scale_lr`. Now it scales the lr and
    the run stops only at the missing dataset."""
    cfg = osp.join(REPO, 'configs', 'rmt', 'fpn_rmt-s_8xb2-80k_ade20k-512x512.py')
    proc = run_tool([TRAIN, cfg, '--auto-scale-lr'], tmp_path, timeout=600)
    assert proc.returncode != 0
    assert 'needs `auto_scale_lr' not in proc.stderr
    assert ('Batch scaling (--auto-scale-lr): total batch 2 (1 process x 2) instead of the 16 '
            'the config was set for: lr 0.0001 -> 1.25e-05.') in proc.stderr
    assert 'expects "data/ade/ADEChallengeData2016"' in proc.stderr


# -- 5. Downstream initialisation from EMA or source weights -------------------------------------
@pytest.mark.slow
def test_select_ema_weights_of_an_emahook_checkpoint(demo_root, tmp_path):
    """A real EMAHook run saves the EMA weights in `state_dict` and the trained ones in
    `ema_state_dict`; `select_ema_weights` gives either, and a backbone `Pretrained` init from
    the 'source' file gets exactly the trained (non-EMA) weights."""
    from mmengine.runner import Runner
    cfg = _cfg('demo/rmt-nano_1xb32_demo-cls.py')
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_dataloader.dataset.data_root = str(demo_root / 'data' / 'demo' / 'cls')
    cfg.train_dataloader.dataset.indices = 8
    cfg.train_dataloader.update(batch_size=4, num_workers=0, persistent_workers=False)
    cfg.default_hooks.checkpoint = dict(type='mmvit_ext.SafeCheckpointHook', interval=1)
    # a short average, so that it is far from the trained weights after two steps
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.5, update_buffers=True)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    trained, averaged = runner.model.state_dict(), ema_hook.ema_model.module.state_dict()
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)

    src = tmp_path / 'work' / 'epoch_1.pth'
    for weights, expected in (('source', trained), ('ema', averaged)):
        dst = tmp_path / 'out' / f'{weights}.pth'
        proc = run_tool([SELECT_EMA, str(src), str(dst), '--weights', weights], tmp_path)
        assert proc.returncode == 0, proc.stderr
        saved = torch.load(dst, map_location='cpu', weights_only=True)
        assert saved['meta']['weights'] == weights and set(saved) == {'meta', 'state_dict'}
        assert saved['state_dict'].keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(saved['state_dict'][key], value, rtol=0, atol=0)

    # the downstream way in: a backbone initialised from the 'source' file (prefix backbone.)
    from mmvit_ext.registry import MODELS
    backbone = MODELS.build(dict(cfg.model.backbone, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'out' / 'source.pth'), prefix='backbone.')))
    backbone.init_weights()
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, trained[f'backbone.{key}'], rtol=0, atol=0)


@pytest.mark.slow
def test_select_ema_weights_refuses_a_checkpoint_without_ema(tmp_path):
    plain = tmp_path / 'plain.pth'
    torch.save({'meta': {}, 'state_dict': {'w': torch.ones(1)}}, plain)
    with pytest.raises(KeyError, match='saved without EMAHook'):
        extract_weights(str(plain), str(tmp_path / 'out.pth'), 'source')
    with pytest.raises(ValueError, match="one of \\('ema', 'source'\\)"):
        select_weights({'state_dict': {}, 'ema_state_dict': {}}, 'model')
    proc = run_tool([SELECT_EMA, str(plain), str(tmp_path / 'out.pth'), '--weights', 'ema'],
                    tmp_path)
    assert proc.returncode != 0 and 'saved without EMAHook' in proc.stderr
    assert not (tmp_path / 'out.pth').exists()


# -- 6. The batch-size trap ----------------------------------------------------------------------
@pytest.mark.slow
def test_train_warns_when_the_batch_differs_from_the_config_batch(tmp_path):
    """`tools/train.py configs/rmt/rmt-s_in1k.py` on one process: batch 128 with the lr set for
    1024 is 8x the linear-scaling lr; say so once, with the factor and the flag."""
    proc = run_tool([TRAIN, osp.join(REPO, 'configs', 'rmt', 'rmt-s_in1k.py')], tmp_path)
    assert proc.returncode != 0 and 'expects "data/imagenet"' in proc.stderr  # no data here
    warning = ('WARNING: the total batch is 128 (1 process x 128), but the lr (0.001) and EMA '
               'momentum (8e-05) of this config are set for a batch of 1024 '
               '(auto_scale_lr.base_batch_size): this run would train at 8x the lr that linear '
               'scaling gives for 128. Add --auto-scale-lr to scale to this batch '
               '(lr x0.125 = 0.000125), or launch 8 processes of 128.')
    assert proc.stderr.count('WARNING: the total batch') == 1
    assert warning in proc.stderr


def test_auto_scale_lr_rescales_lr_and_ema_momentum():
    cfg = _cfg('rmt/rmt-s_in1k.py')
    cfg.launcher = 'none'
    assert apply_batch_scaling(cfg, auto_scale=True) == 128 / 1024
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-3 / 8)
    assert cfg.auto_scale_lr.enable is False  # mmengine must not scale a second time
    momentum = cfg.custom_hooks[0].momentum
    assert momentum == pytest.approx(scaled_ema_momentum(8e-5, 1 / 8))
    # the official rule: timm decay 0.99996 ** (batch / 512), mmengine momentum = 1 - decay
    assert momentum == pytest.approx(1 - 0.99996 ** (128 / 512), rel=1e-3)


def test_batch_scaling_counts_processes_and_accumulation(monkeypatch, capsys):
    cfg = _cfg('rmt/rmt-s_8xb128_in1k.py')
    cfg.launcher = 'pytorch'
    monkeypatch.setenv('WORLD_SIZE', '8')
    monkeypatch.setenv('RANK', '0')
    assert apply_batch_scaling(cfg) == 1 and capsys.readouterr().err == ''
    monkeypatch.setenv('WORLD_SIZE', '4')
    cfg.optim_wrapper.accumulative_counts = 2
    assert apply_batch_scaling(cfg) == 1 and capsys.readouterr().err == ''
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '1')  # only rank 0 prints
    assert apply_batch_scaling(cfg, auto_scale=True) == 0.5  # 2 x 128 x 2 = 512
    assert capsys.readouterr().err == ''
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(5e-4)


# -- 8. Every family README lists its remaining deviations ---------------------------------------
@pytest.mark.parametrize('family', FAMILIES)
def test_family_readme_has_recipe_notes(family):
    with open(osp.join(REPO, 'configs', family, 'README.md')) as f:
        text = f.read()
    assert '\n## Recipe notes' in text
