"""tools/test.py --show-dir / --interval / --tta and tools/image_demo.py on the demo data.

The checkpoints are freshly built (untrained) models: drawing does not depend on accuracy.
"""
import os
import os.path as osp

import pytest
import torch

from tests.conftest import REPO, load_tool, run_tool

DEMO = {
    'cls': 'configs/demo/rmt-nano_1xb32_demo-cls.py',
    'det': 'configs/demo/mask-rcnn_rmt-nano_fpn_demo-coco.py',
    'seg': 'configs/demo/fpn_rmt-nano_1xb8_demo-ade.py',
}
NUM_TEST_IMAGES = 6  # the first images of each demo test set keep the runs short


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    import mmvit_ext
    root = tmp_path_factory.mktemp('ckpt')
    paths = {}
    for task, config in DEMO.items():
        model = mmvit_ext.get_model(osp.join(REPO, config))
        paths[task] = str(root / f'{task}.pth')
        torch.save({'state_dict': model.state_dict(), 'meta': {}}, paths[task])
    return paths


def _images(folder):
    return sorted(osp.join(r, f) for r, _, files in os.walk(folder) for f in files
                  if f.endswith(('.png', '.jpg')))


def _test(task, checkpoints, demo_root, tmp_path, *extra):
    show_dir = tmp_path / f'show-{task}'
    proc = run_tool([osp.join(REPO, 'tools', 'test.py'), osp.join(REPO, DEMO[task]),
                     checkpoints[task], '--work-dir', str(tmp_path / 'work'),
                     '--show-dir', str(show_dir), '--cfg-options',
                     f'test_dataloader.dataset.indices={NUM_TEST_IMAGES}', *extra],
                    cwd=demo_root, timeout=900, env=dict(OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _images(show_dir)


@pytest.mark.slow
@pytest.mark.parametrize('task,interval', [('cls', 1), ('det', 1), ('det', 2), ('seg', 1)])
def test_show_dir_writes_every_nth_image_into_the_given_folder(task, interval, checkpoints,
                                                               demo_root, tmp_path):
    images = _test(task, checkpoints, demo_root, tmp_path, '--interval', str(interval))
    assert len(images) == NUM_TEST_IMAGES // interval
    assert not _images(tmp_path / 'work'), 'images must not go to the work dir'


@pytest.mark.slow
def test_default_flip_tta_classification(checkpoints, demo_root, tmp_path):
    proc = run_tool([osp.join(REPO, 'tools', 'test.py'), osp.join(REPO, DEMO['cls']),
                     checkpoints['cls'], '--work-dir', str(tmp_path), '--tta', '--cfg-options',
                     f'test_dataloader.dataset.indices={NUM_TEST_IMAGES}'],
                    cwd=demo_root, timeout=900, env=dict(OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'accuracy/top1' in proc.stdout


def test_tta_of_instance_segmentation_is_a_clear_error():
    from mmengine.config import Config

    from mmvit_ext.utils.show import apply_tta
    cfg = Config.fromfile(osp.join(REPO, DEMO['det']))
    with pytest.raises(SystemExit, match='does not support instance segmentation'):
        apply_tta(cfg, DEMO['det'])


@pytest.mark.slow
@pytest.mark.parametrize('task', ['cls', 'seg'])
def test_image_demo(task, checkpoints, demo_root, tmp_path):
    data = demo_root / 'data' / 'demo'
    image = {'cls': sorted((data / 'cls' / 'val').rglob('*.jpg'))[0],  # one image
             'seg': data / 'ade' / 'images' / 'validation'}[task]  # a folder
    proc = run_tool([osp.join(REPO, 'tools', 'image_demo.py'), osp.join(REPO, DEMO[task]),
                     checkpoints[task], str(image), '--out-dir', str(tmp_path / 'out'),
                     '--device', 'cpu'], cwd=demo_root, timeout=600,
                    env=dict(OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = len(os.listdir(image)) if osp.isdir(image) else 1
    assert len(_images(tmp_path / 'out' / 'vis')) == expected
    assert 'Drawn images' in proc.stdout


@pytest.mark.slow
def test_image_demo_missing_input(checkpoints, tmp_path):
    proc = run_tool([osp.join(REPO, 'tools', 'image_demo.py'), osp.join(REPO, DEMO['cls']),
                     checkpoints['cls'], str(tmp_path / 'nope.jpg')], cwd=tmp_path)
    assert proc.returncode != 0 and 'Input not found' in proc.stderr


def test_get_flops_per_stage_rows_add_up_to_the_backbone():
    from mmvit_ext.models.backbones import RMT
    get_flops = load_tool('analysis_tools/get_flops.py')
    backbone = RMT(arch=dict(embed_dims=[16, 32, 32, 32], depths=[1, 2, 1, 1],
                             num_heads=[1, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                             init_values=[2, 2, 2, 2], heads_ranges=[3, 3, 3, 3],
                             decomposed=[True, True, False, False],
                             layer_scales=[False] * 4)).eval()
    inputs = (torch.randn(1, 3, 64, 64), )
    rows = get_flops.per_stage_rows(backbone, inputs)
    *parts, total = rows
    assert total[0] == 'total' and total[2] == sum(p.numel() for p in backbone.parameters())
    assert total[3] == get_flops.count_flops(backbone, inputs)[0] > 0
    assert sum(r[2] for r in parts) == total[2] and sum(r[3] for r in parts) == total[3]
    block_type = type(backbone.stages[1].blocks[0]).__name__
    assert [r[1] for r in parts if r[0] == 'stages.1.blocks'] == [f'{block_type} x2']
    assert 'backbone per stage' in get_flops.format_stage_table(rows)
