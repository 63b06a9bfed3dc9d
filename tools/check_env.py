"""Check that the installed stack works; name the broken piece when it does not.

Run by ``tools/setup_env.sh`` after every install. Exit code 1 with one line per failure.
"""
import sys

import torch

CHECKS = []


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn
    return register


@check('torchvision (ops.nms on CPU)')
def _torchvision():
    import torchvision.ops
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    keep = torchvision.ops.nms(boxes, torch.tensor([.9, .8, .7]), .5)
    assert keep.tolist() == [0, 2], keep


@check('mmcv compiled ops (mmcv.ops.nms)')
def _mmcv_nms():
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    _, keep = nms(boxes, torch.tensor([.9, .8, .7]), .5)
    assert keep.tolist() == [0, 2], keep


@check('mmcv compiled ops (mmcv.ops.RoIAlign)')
def _mmcv_roi_align():
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
    failures = []
    for name, fn in CHECKS:
        try:
            fn()
        except Exception as exc:  # report every broken piece, not just the first
            failures.append(f'BROKEN: {name}: {type(exc).__name__}: {exc}')
    if failures:
        print('\n'.join(failures), file=sys.stderr)
        print('The environment is incomplete; see README "Installation" '
              '(versions that work together, and the mmcv build with ops).', file=sys.stderr)
        sys.exit(1)
    print(f'environment OK: torch {torch.__version__}, all {len(CHECKS)} checks passed')


if __name__ == '__main__':
    main()
