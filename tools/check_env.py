"""Check that the installed stack works; name the broken piece when it does not.

Run by ``tools/setup_env.sh`` after every install. Exit code 1 with one line per failure.

``--missing`` (used by ``setup_env.sh --active``) instead prints the requirements of
requirements.txt that are not installed, one per line, and exits 1 when one is installed at a
version the stack cannot use.
"""
import importlib
import importlib.metadata
import importlib.util
import os.path as osp
import sys

REQUIREMENTS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'requirements.txt')
# Versions an existing environment may have (looser than the pins of requirements.txt, which
# are what a fresh install gets): mmcv's range is what mmdet 3.x and mmseg 1.x accept at import.
ACCEPTED = {
    'torch': '>=2.0', 'mmengine': '>=0.10', 'mmcv': '>=2.0.0rc4,<2.2.0', 'mmdet': '>=3.0',
    'mmsegmentation': '>=1.0', 'mmpretrain': '>=1.0', 'setuptools': '<82',
}
# distribution name -> import name, where they differ (a fork such as onedl-mmcv keeps the
# import name, so presence is decided by the import name)
IMPORT_NAMES = {
    'mmsegmentation': 'mmseg', 'opencv-python': 'cv2', 'Pillow': 'PIL', 'pyyaml': 'yaml',
    'pytest-timeout': 'pytest_timeout', 'openmim': 'mim',
}


def installed_version(dist_name):
    """The installed version of a requirement, or None; forks are found by import name."""
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        pass
    import_name = IMPORT_NAMES.get(dist_name, dist_name.replace('-', '_'))
    if importlib.util.find_spec(import_name) is None:
        return None
    return getattr(importlib.import_module(import_name), '__version__', '0')


def missing_requirements():
    """(names of the missing requirements, reasons why installed ones do not fit)."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    missing, conflicts = [], []
    for line in open(REQUIREMENTS):
        line = line.split('#')[0].strip()
        if not line:
            continue
        name = Requirement(line).name
        version = installed_version(name)
        if version is None:
            missing.append(name)
            continue
        accepted = SpecifierSet(ACCEPTED.get(name, ''), prereleases=True)
        if accepted and version.split('+')[0] not in accepted:
            conflicts.append(f'{name} {version} is installed, but the stack needs {name}'
                             f'{accepted}; install a fitting version yourself (or use a fresh '
                             f'environment: bash tools/setup_env.sh without --active).')
        elif name == 'mmcv' and importlib.util.find_spec('mmcv._ext') is None:
            conflicts.append(f'mmcv {version} is installed without its compiled ops (mmcv-lite '
                             f'or a build without MMCV_WITH_OPS=1); mmdet and mmseg need them. '
                             f'Uninstall it, and this script builds mmcv with its ops.')
    return missing, conflicts


CHECKS = []


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn
    return register


@check('torchvision (ops.nms on CPU)')
def _torchvision():
    import torch
    import torchvision.ops
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    keep = torchvision.ops.nms(boxes, torch.tensor([.9, .8, .7]), .5)
    assert keep.tolist() == [0, 2], keep


@check('mmcv compiled ops (mmcv.ops.nms)')
def _mmcv_nms():
    import torch
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    _, keep = nms(boxes, torch.tensor([.9, .8, .7]), .5)
    assert keep.tolist() == [0, 2], keep


@check('mmcv compiled ops (mmcv.ops.RoIAlign)')
def _mmcv_roi_align():
    import torch
    from mmcv.ops import RoIAlign
    feat = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])
    out = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=2)(feat, rois)
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all(), out


@check('mmdet.models')
def _mmdet():
    import mmdet.models  # noqa: F401


@check('mmseg.models')
def _mmseg():
    import mmseg.models  # noqa: F401


@check('mmpretrain.models')
def _mmpretrain():
    import mmpretrain.models  # noqa: F401


@check('mmvit_ext')
def _mmvit_ext():
    import mmvit_ext  # noqa: F401


def main():
    if sys.argv[1:] == ['--missing']:
        missing, conflicts = missing_requirements()
        print('\n'.join(missing))
        if conflicts:
            print('\n'.join(conflicts), file=sys.stderr)
            sys.exit(1)
        return
    import torch
    failures = []
    for name, fn in CHECKS:
        try:
            fn()
        except Exception as exc:  # report every broken piece, not just the first
            failures.append(f'BROKEN: {name}: {type(exc).__name__}: {exc}')
    if failures:
        print('\n'.join(failures), file=sys.stderr)
        print('The environment is incomplete; see README "Installation".', file=sys.stderr)
        sys.exit(1)
    print(f'environment OK: torch {torch.__version__}, all {len(CHECKS)} checks passed')


if __name__ == '__main__':
    main()
