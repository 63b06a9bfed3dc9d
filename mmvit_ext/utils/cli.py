"""What ``tools/train.py`` and ``tools/test.py`` share: loading a config of any of the three
toolboxes, checking the data is where the config says, CPU-friendly distributed setup, the
checkpoint options (``--non-strict``, ``--overwrite``) and the inference precision and kernel
options (``--amp``, ``--fuse``, shared with ``benchmark.py``)."""
import contextlib
import json
import os
import os.path as osp

from mmengine.config import DictAction

from mmvit_ext.checkpoint import check_work_dir
from mmvit_ext.utils.config import load_config as load_config_file
from mmvit_ext.utils.config import register_modules

# default_scope -> what differs per toolbox: the metric that dumps predictions for --out
TOOLBOXES = {
    'mmpretrain': dict(dump_metric='DumpResults'),
    'mmdet': dict(dump_metric='DumpDetResults'),
    'mmseg': dict(dump_metric=None),  # mmseg --out writes PNGs through IoUMetric.output_dir
}

# How to get each dataset when its root is missing.
DATASET_HINTS = {
    'ImageNet': 'the ImageNet-1k folders train/ and val/ (class sub-folders or meta/*.txt lists); '
                'see https://image-net.org and mmpretrain docs "Prepare dataset"',
    'CocoDataset': 'COCO 2017: train2017/, val2017/ and annotations/instances_*2017.json from '
                   'cocodataset.org',
    'ADE20KDataset': 'ADEChallengeData2016 (images/ and annotations/ with training/ and '
                     'validation/) from the MIT scene-parsing benchmark',
}
DEMO_HINT = ('For a quick run without the real data: `python tools/generate_demo_data.py` and a '
             'config of configs/demo/.')


def add_common_args(parser):
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='the directory to save logs and checkpoints')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, xxx=yyy format (e.g. model.backbone.arch=S)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torchrun passes --local-rank (or LOCAL_RANK); older launchers --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args):
    """Load ``args.config`` (:func:`mmvit_ext.utils.config.load_config`), register its toolbox
    as the default scope, apply the launcher and the work dir."""
    cfg = load_config_file(args.config, args.cfg_options)
    register_modules(cfg.default_scope, init_default_scope=True)
    cfg.launcher = args.launcher
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def _datasets(dataset_cfg):
    """Yield the leaf dataset configs of possibly wrapped datasets (Repeat/Concat/...)."""
    if dataset_cfg is None:
        return
    if 'datasets' in dataset_cfg:
        for sub in dataset_cfg['datasets']:
            yield from _datasets(sub)
    elif 'dataset' in dataset_cfg:
        yield from _datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def _evaluators(cfg, dataloader):
    evaluator = cfg.get({'val_dataloader': 'val_evaluator',
                         'test_dataloader': 'test_evaluator'}.get(dataloader, ''))
    return evaluator if isinstance(evaluator, (list, tuple)) else [evaluator or {}]


def check_annotations(name, kind, path, format_only):
    """Stop with a message naming ``path`` when an annotation file has no samples or, for COCO,
    lacks what training or evaluation needs (the toolboxes would fail with "need at least one
    array to concatenate" or evaluate to -1 without a word)."""
    if path.endswith('.json') and 'Coco' in str(kind):
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise SystemExit(f'{name}: the annotation file {path} is malformed JSON ({err}). '
                             f'Fix or regenerate it.') from None
        needed = ['images', 'categories'] + ([] if format_only else ['annotations'])
        missing = [key for key in needed if not isinstance(data, dict)
                   or not isinstance(data.get(key), list)]
        if missing or not data['images']:
            what = (f'has no {" / ".join(repr(k) for k in missing)} list' if missing
                    else "lists no 'images'")
            raise SystemExit(
                f'{name}: the COCO annotation file {path} {what}. Use the instances_*.json '
                f'file of the split (image-info files without annotations, e.g. test-dev, '
                f'only with the evaluator\'s format_only=True).')
    elif path.endswith('.txt'):
        with open(path) as f:
            if not any(line.strip() for line in f):
                raise SystemExit(f'{name}: the annotation list {path} is empty: it lists no '
                                 f'samples. Regenerate it, or point ann_file at the right list.')


def check_data(cfg, dataloaders):
    """Stop with a message that names the expected path when a dataset root is missing, and
    check the annotation files (:func:`check_annotations`)."""
    checked = set()  # a COCO file is read once (the val set's is also its metric's)
    for name in dataloaders:
        loader = cfg.get(name)
        if not loader:
            continue
        for ds in _datasets(loader.get('dataset')):
            root = ds.get('data_root') or ''
            paths = [root] if root else []
            ann = ds.get('ann_file')
            if ann:
                paths.append(osp.join(root, ann))
            for path in paths:
                if path and not osp.exists(path):
                    kind = ds.get('type', 'dataset')
                    hint = DATASET_HINTS.get(str(kind).split('.')[-1],
                                             'the dataset in the layout the config describes')
                    raise SystemExit(
                        f'{name}: {kind} expects "{path}", which does not exist. Put {hint} '
                        f'there (a symlink is fine), or point the config at it with '
                        f'--cfg-options {name}.dataset.data_root=/path/to/data. {DEMO_HINT}')
            # format_only (e.g. COCO test-dev): results are written, not scored
            format_only = any(e.get('format_only') for e in _evaluators(cfg, name))
            if ann and osp.isfile(paths[-1]) and paths[-1] not in checked:
                check_annotations(name, ds.get('type'), paths[-1], format_only)
                checked.add(paths[-1])
        for evaluator in _evaluators(cfg, name):  # e.g. CocoMetric reads its own ground truth
            ann = evaluator.get('ann_file')
            if ann and osp.isfile(ann) and ann not in checked:
                check_annotations(name.replace('dataloader', 'evaluator'),
                                  evaluator.get('type'), ann, evaluator.get('format_only'))


@contextlib.contextmanager
def annotation_json_errors_named(cfg):
    """json's error for a malformed annotation file (raised deep inside the toolbox's dataset)
    does not say which file: find the config's annotation JSON that fails and name it."""
    try:
        yield
    except json.JSONDecodeError:
        for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            for ds in _datasets((cfg.get(name) or {}).get('dataset')):
                path = osp.join(ds.get('data_root') or '', ds.get('ann_file') or '')
                if not (path.endswith('.json') and osp.isfile(path)):
                    continue
                try:
                    with open(path) as f:
                        json.load(f)
                except json.JSONDecodeError as err:
                    raise SystemExit(f'{name}: the annotation file {path} is malformed JSON '
                                     f'({err}). Fix or regenerate it.') from None
        raise


def setup_distributed(cfg):
    """Make ``--launcher pytorch`` work on machines without a GPU.

    mmengine's init_dist always picks a CUDA device and wraps the model with
    ``device_ids=[LOCAL_RANK]``; without CUDA we start a gloo group ourselves (the Runner then
    skips init_dist) and wrap without device ids.
    """
    import torch
    import torch.distributed as dist
    if cfg.launcher != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return
    dist.init_process_group(backend='gloo')
    wrapper = dict(type='MMDistributedDataParallel', device_ids=None,
                   broadcast_buffers=False,
                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.update(cfg.get('model_wrapper_cfg') or {})
    cfg.model_wrapper_cfg = wrapper
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'


def backbone_of(model):
    """``model.backbone``; stops with a message for a model without one."""
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        raise SystemExit(f'{type(model).__name__} has no `backbone`; drop --backbone-only.')
    return backbone


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


# -- inference precision and kernels ---------------------------------------------------------
def fuse_when_auto(device_type, amp):
    """The choice of ``--fuse auto``: whether inference runs through the fused CPU copies of
    :func:`mmvit_ext.fuse_for_cpu_inference` (in models that have fusable blocks).

    The fused kernels compute in fp32 on the CPU only, so on a GPU and under autocast
    (``--amp``: bfloat16 on the CPU) the plain modules run. In fp32 on the CPU, fused was
    measured faster than plain for RMT and GroupMixFormer (the family READMEs).
    """
    return device_type == 'cpu' and not amp


def use_fused_inference(fuse, device_type, amp):
    """Whether ``--fuse {auto,on,off}`` with ``--amp`` (or not) on ``device_type`` runs the
    fused CPU copies; ``--fuse on --amp`` stops with a message (the copies are fp32 only)."""
    if fuse == 'on' and amp:
        raise SystemExit('--fuse on --amp: the fused CPU kernels compute in fp32 only, they do '
                         'not run under autocast. Drop --amp for fused fp32 inference, or drop '
                         '--fuse on (auto) for the plain modules under bfloat16 autocast.')
    return fuse == 'on' or (fuse == 'auto' and fuse_when_auto(device_type, amp))


# -- checkpoint options ---------------------------------------------------------------------
SAFE_HOOK = 'mmvit_ext.SafeCheckpointHook'


def add_checkpoint_args(parser, training):
    parser.add_argument('--non-strict', action='store_true',
                        help='load a checkpoint whose keys or shapes do not all fit the model '
                             '(only the matching weights; the mismatches are logged)')
    if training:
        parser.add_argument('--overwrite', action='store_true',
                            help='start a new run in a work dir that holds checkpoints of an '
                                 'earlier run, replacing them')


def apply_checkpoint_args(cfg, args, training):
    """``--non-strict`` and, for training, the work-dir checks of
    :func:`mmvit_ext.checkpoint.check_work_dir`."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('type') not in (SAFE_HOOK, 'SafeCheckpointHook'):
        print(f'Warning: default_hooks.checkpoint is {hook and hook.get("type")}, not '
              f'{SAFE_HOOK}: checkpoints are written in place and loaded without strict key '
              f'checks. Inherit configs/_base_/default_runtime_*.py or set its type.')
    elif args.non_strict:
        hook['strict_load'] = False
    if training:
        check_work_dir(cfg.work_dir, cfg.get('resume'), cfg.get('load_from'), args.overwrite)
