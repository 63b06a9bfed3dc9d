"""Check that the installed stack works; name the broken piece when it does not.

Run by ``tools/setup_env.sh`` after every install. Exit code 1 with one line per failure.
``--stack upstream|onedl`` (default: the one installed) selects the stack the options below
refer to.

``--missing`` (used by ``setup_env.sh --active``) instead prints the requirements of the
stack's requirements file that are not installed, one per line, and exits 1 when one is installed at a
version the stack cannot use.

``--build-prereqs [--cuda]`` checks what building mmcv from its sdist needs in this
environment (run before the build, and by CI on every run, so that a change that would break a
fresh install shows even where mmcv comes from a cache); each missing piece is one line with
its fix.

``--lock [FILE]`` checks that the installed distributions are exactly the pins of the stack's
lock (or of FILE).
"""
import argparse
import importlib
import importlib.metadata
import glob
import importlib.util
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import sysconfig

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Per stack: its requirements; the versions an existing environment may have (looser than the
# pins, which are what a fresh install gets); what building its mmcv needs pinned.
STACKS = {
    'upstream': dict(
        requirements='requirements.txt', lock='requirements.lock',
        # mmcv's range is what mmdet 3.x and mmseg 1.x accept at import
        accepted={'torch': '>=2.0', 'mmengine': '>=0.10,<0.11', 'mmcv': '>=2.0.0rc4,<2.2.0',
                  'mmdet': '>=3.0', 'mmsegmentation': '>=1.0', 'mmpretrain': '>=1.0',
                  'setuptools': '<82'},
        # mmcv 2.1.0's setup.py imports pkg_resources, which setuptools 82 removed
        build_constraints=['setuptools<82']),
    'onedl': dict(
        requirements='requirements-onedl.txt', lock='requirements-onedl.lock',
        accepted={'torch': '>=2.0', 'onedl-mmengine': '>=0.10.8,<0.11',
                  'onedl-mmcv': '>=2.3',
                  'onedl-mmdetection': '>=3.5', 'onedl-mmsegmentation': '>=1.4',
                  'onedl-mmpretrain': '>=1.3'},
        build_constraints=[]),
}
# distribution name -> import name, where they differ (the fork keeps the import names, so
# presence is decided by the import name)
IMPORT_NAMES = {
    'mmsegmentation': 'mmseg', 'opencv-python': 'cv2', 'Pillow': 'PIL', 'pyyaml': 'yaml',
    'pytest-timeout': 'pytest_timeout', 'openmim': 'mim', 'onedl-mmengine': 'mmengine',
    'onedl-mmcv': 'mmcv', 'onedl-mmdetection': 'mmdet', 'onedl-mmsegmentation': 'mmseg',
    'onedl-mmpretrain': 'mmpretrain',
}


def installed_stack():
    """The stack this environment holds: the fork's distributions, else the upstream ones."""
    try:
        importlib.metadata.version('onedl-mmcv')
        return 'onedl'
    except importlib.metadata.PackageNotFoundError:
        return 'upstream'


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


def missing_requirements(stack):
    """(names of the missing requirements, reasons why installed ones do not fit)."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    missing, conflicts = [], []
    for line in open(osp.join(REPO, STACKS[stack]['requirements'])):
        line = line.split('#')[0].strip()
        if not line:
            continue
        name = Requirement(line).name
        version = installed_version(name)
        if version is None:
            missing.append(name)
            continue
        accepted = SpecifierSet(STACKS[stack]['accepted'].get(name, ''), prereleases=True)
        if accepted and version.split('+')[0] not in accepted:
            conflicts.append(f'{name} {version} is installed, but the stack needs {name}'
                             f'{accepted}; install a fitting version yourself, use the other '
                             f'stack (--stack), or a fresh environment: bash '
                             f'tools/setup_env.sh without --active.')
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


def check_mmcv_cuda_ops():
    """mmcv's compiled library holds its CUDA ops, checked without a GPU: the CUDA version it
    was compiled with, and the host launchers of the nms and RoIAlign kernels."""
    import mmcv
    from mmcv.utils import ext_loader
    ext = ext_loader.load_ext('_ext', ['get_compiling_cuda_version'])
    version = ext.get_compiling_cuda_version()
    assert version != 'not available', 'compiled without CUDA (rebuild with FORCE_CUDA=1)'
    library = open(glob.glob(osp.join(osp.dirname(mmcv.__file__), '_ext*.so'))[0], 'rb').read()
    for launcher in (b'NMSCUDAKernelLauncher', b'ROIAlignForwardCUDAKernelLauncher'):
        assert launcher in library, f'the library lacks {launcher.decode()}'
    print(f'mmcv CUDA ops: compiled with CUDA {version}, nms and RoIAlign kernels present')


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


def build_prerequisite_problems(stack, cuda=False):
    """What building the stack's mmcv from source with ``--no-build-isolation`` would miss
    here: one ``what is missing: how to fix it`` line each."""
    from packaging.requirements import Requirement
    problems = []
    for constraint in STACKS[stack]['build_constraints']:
        req = Requirement(constraint)
        version = installed_version(req.name)
        if version is None or version not in req.specifier:
            problems.append(f'{constraint} (found {version}): pip install "{constraint}" '
                            f'(mmcv\'s setup.py imports pkg_resources, which setuptools 82 '
                            f'removed)')
        elif importlib.util.find_spec('pkg_resources') is None:
            problems.append('pkg_resources (part of setuptools) does not import: '
                            f'pip install --force-reinstall "{constraint}"')
    for module in ('wheel', 'ninja', 'torch'):
        if importlib.util.find_spec(module) is None:
            problems.append(f'{module} is not installed: the build runs without isolation and '
                            f'imports it; install it from the lock first')
    if shutil.which(os.environ.get('CXX', 'c++')) is None:
        problems.append('no C++ compiler (c++ or $CXX): install one, e.g. apt-get install g++')
    if not osp.isfile(osp.join(sysconfig.get_paths()['include'], 'Python.h')):
        problems.append('Python.h is missing: install the Python headers, e.g. apt-get install '
                        f'python{sys.version_info.major}.{sys.version_info.minor}-dev')
    if cuda:
        problems += cuda_build_problems()
    return problems


def cuda_include_dirs():
    """Header folders of the CUDA wheels that torch's standard build installs (they hold the
    cusparse.h and cublas headers that torch's CUDA headers include and that a bare CUDA
    toolkit may lack)."""
    spec = importlib.util.find_spec('nvidia')
    roots = list(spec.submodule_search_locations) if spec else []
    return sorted(d for root in roots for d in glob.glob(osp.join(root, '*', 'include'))
                  if osp.isfile(osp.join(d, 'cusparse.h')))


def cuda_build_problems():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME
    if torch.version.cuda is None:
        return [f'torch {torch.__version__} is a CPU-only build: install the standard build '
                f'(the lock\'s torch) to build mmcv with CUDA ops']
    nvcc = osp.join(CUDA_HOME, 'bin', 'nvcc') if CUDA_HOME else None
    if nvcc is None or not osp.isfile(nvcc):
        return [f'nvcc not found: install the CUDA {torch.version.cuda} toolkit and set '
                f'CUDA_HOME to it (found CUDA_HOME={CUDA_HOME})']
    if not osp.isfile(osp.join(CUDA_HOME, 'include', 'cuda_runtime.h')):
        return [f'CUDA_HOME={CUDA_HOME} is not a CUDA toolkit (no include/cuda_runtime.h; '
                f'torch guesses it from the nvcc on PATH): set CUDA_HOME, e.g. /usr/local/cuda']
    release = re.search(r'release (\d+)\.(\d+)', subprocess.run(
        [nvcc, '--version'], capture_output=True, text=True).stdout)
    if release is None or release.group(1) != torch.version.cuda.split('.')[0]:
        return [f'{nvcc} is CUDA {release and release.group(0)}, torch was built with CUDA '
                f'{torch.version.cuda}: set CUDA_HOME to a matching toolkit']
    if not (osp.isfile(osp.join(CUDA_HOME, 'include', 'cusparse.h')) or cuda_include_dirs()):
        return ['cusparse.h is neither in the CUDA toolkit nor in the nvidia wheels: install '
                'the lock\'s torch (its nvidia-* wheels ship the headers)']
    return []


def lock_mismatches(lock_path):
    """Differences between the installed distributions and the ``name==version`` pins of a
    lock file (this package itself aside)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    pinned = {}
    for line in open(lock_path):
        line = line.split('#')[0].strip()
        if line:
            req = Requirement(line)
            pinned[canonicalize_name(req.name)] = req.specifier
    installed = {canonicalize_name(d.metadata['Name']): d.version
                 for d in importlib.metadata.distributions()}
    installed.pop('mmvit-ext', None)
    installed.pop('pip', None)
    problems = [f'{name} is not installed (lock: {spec})' for name, spec in pinned.items()
                if name not in installed]
    problems += [f'{name} {installed[name]} is installed, the lock says {spec}'
                 for name, spec in pinned.items()
                 if name in installed and installed[name] not in spec]
    problems += [f'{name} {version} is installed but not in the lock'
                 for name, version in installed.items() if name not in pinned]
    return problems


def report(problems, header, footer):
    if problems:
        print(header, file=sys.stderr)
        print('\n'.join(f'  {p}' for p in problems), file=sys.stderr)
        print(footer, file=sys.stderr)
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stack', choices=sorted(STACKS), default=installed_stack(),
                        help='default: the one installed')
    parser.add_argument('--missing', action='store_true')
    parser.add_argument('--build-constraints', action='store_true',
                        help='print the pins that building the stack\'s mmcv needs')
    parser.add_argument('--build-prereqs', action='store_true')
    parser.add_argument('--cuda', action='store_true',
                        help='with --build-prereqs: for a CUDA build; alone: mmcv has CUDA ops')
    parser.add_argument('--lock', nargs='?', const='',
                        help='the lock file (default: the stack\'s)')
    parser.add_argument('--cuda-include-dirs', action='store_true',
                        help='print the nvidia wheels\' header folders, joined by ":"')
    args = parser.parse_args()
    if args.build_constraints:
        print('\n'.join(STACKS[args.stack]['build_constraints']))
        return
    if args.cuda_include_dirs:
        print(':'.join(cuda_include_dirs()))
        return
    if args.missing:
        missing, conflicts = missing_requirements(args.stack)
        print('\n'.join(missing))
        report(conflicts, 'The environment cannot be used as it is:', '')
        return
    if args.build_prereqs:
        report(build_prerequisite_problems(args.stack, args.cuda),
               'Building mmcv from source would fail here; missing:', '')
        print('mmcv build prerequisites OK' + (' (with CUDA)' if args.cuda else ''))
        return
    if args.lock is not None:
        args.lock = args.lock or osp.join(REPO, STACKS[args.stack]['lock'])
        report(lock_mismatches(args.lock), f'The environment differs from {args.lock}:',
               'Reinstall it: bash tools/setup_env.sh (a new lock makes a new environment).')
        print(f'environment matches {osp.basename(args.lock)}')
        return
    import torch
    failures = []
    checks = CHECKS + [('mmcv CUDA ops', check_mmcv_cuda_ops)] * args.cuda
    for name, fn in checks:
        try:
            fn()
        except Exception as exc:  # report every broken piece, not just the first
            failures.append(f'BROKEN: {name}: {type(exc).__name__}: {exc}')
    if failures:
        print('\n'.join(failures), file=sys.stderr)
        print('The environment is incomplete; see README "Installation".', file=sys.stderr)
        sys.exit(1)
    print(f'environment OK: torch {torch.__version__}, all {len(checks)} checks passed')


if __name__ == '__main__':
    main()
