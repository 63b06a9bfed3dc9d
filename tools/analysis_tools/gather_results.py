"""Collect the test metrics of trained configs into one results table, next to the papers'.

Usage::

    python tools/analysis_tools/gather_results.py CONFIGS... --work-dir-root work_dirs
        [--run-test [--tta] [--nproc N]] [--speed BENCHMARK.json ...]
        [--out results] [--update-readme configs/rmt/README.md]

``CONFIGS``: config paths, globs (``'configs/rmt/mask-rcnn_*.py'``) or a family's
``metafile.yml`` (all its configs, in its order). Each config's work dir is
``<work-dir-root>/<config name without .py>``, as ``tools/train.py`` names it by default.

For every config:

* the checkpoint is the newest ``best_*.pth`` of the work dir, else the latest checkpoint
  (mmengine's ``last_checkpoint`` file, else the highest ``epoch_N`` / ``iter_N``);
* with ``--run-test``, ``tools/test.py`` evaluates it (``--nproc N``: through torchrun with
  ``--launcher pytorch``) into ``<work dir>/test`` (``--tta`` as well, where the config defines
  ``tta_model`` and ``tta_pipeline``, into ``<work dir>/test_tta``);
* the metrics are read from the newest test log under the work dir that evaluated that very
  checkpoint: mmengine's ``<timestamp>/<timestamp>.json``, whose run's ``vis_data/config.py``
  names the checkpoint (``load_from``) and tells single-scale from TTA runs. A config without
  checkpoint, or whose checkpoint has no test log yet, is a row that says so.

Rows (those the config's evaluator logs): COCO ``bbox`` / ``segm`` mAP (AP50/AP75/APs/APm/APl
in ``details``), ADE20K mIoU (mAcc/aAcc in ``details``; ``mIoU (ms+flip)`` from TTA runs),
ImageNet top-1 / top-5. COCO
mAPs are shown in percent (mmdet logs fractions) like the papers. ``paper`` is the value of the
metafile.yml entry whose ``Config`` is the config (its ``Paper Results``, else ``Results``);
``delta`` is ours - paper. ``params`` counts the built model; ``FLOPs`` is the metafile's
(``Metadata``, else ``Paper Metadata``); ``inference FPS`` and ``train img/s`` come from
``benchmark.py --out`` files given with ``--speed`` (its ``model`` runner).

Outputs: the Markdown table on stdout and in ``<out>.md``, and ``<out>.csv`` / ``<out>.json``
(the JSON also holds each metric as logged and the test log it came from).
``--update-readme``: the table replaces what lies between ``<!-- results:start -->`` and
``<!-- results:end -->`` in that file.
"""
import argparse
import csv
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)  # run from a clone, too
from mmvit_ext.utils.config import build_from_config, load_config  # noqa: E402
TEST_TOOL = osp.join(REPO, 'tools', 'test.py')
README_START, README_END = '<!-- results:start -->', '<!-- results:end -->'
COLUMNS = ('model', 'schedule', 'metric', 'ours', 'paper', 'delta', 'params', 'FLOPs',
           'inference FPS', 'train img/s', 'details')

# (row name, logged key, metafile metric name, scale to percent, detail keys, TTA run)
METRICS = {
    'mmdet': [
        ('bbox mAP', 'coco/bbox_mAP', 'box AP', 100,
         [('AP50', 'coco/bbox_mAP_50'), ('AP75', 'coco/bbox_mAP_75'), ('APs', 'coco/bbox_mAP_s'),
          ('APm', 'coco/bbox_mAP_m'), ('APl', 'coco/bbox_mAP_l')], False),
        ('segm mAP', 'coco/segm_mAP', 'mask AP', 100,
         [('AP50', 'coco/segm_mAP_50'), ('AP75', 'coco/segm_mAP_75'), ('APs', 'coco/segm_mAP_s'),
          ('APm', 'coco/segm_mAP_m'), ('APl', 'coco/segm_mAP_l')], False),
    ],
    'mmseg': [
        ('mIoU', 'mIoU', 'mIoU', 1, [('mAcc', 'mAcc'), ('aAcc', 'aAcc')], False),
        ('mIoU (ms+flip)', 'mIoU', 'mIoU(ms+flip)', 1, [('mAcc', 'mAcc'), ('aAcc', 'aAcc')],
         True),
    ],
    'mmpretrain': [
        ('top-1', 'accuracy/top1', 'Top 1 Accuracy', 1, [], False),
        ('top-5', 'accuracy/top5', 'Top 5 Accuracy', 1, [], False),
    ],
}


# -- configs and metafiles --------------------------------------------------------------------
def _rel(path):
    return osp.relpath(osp.abspath(path), REPO)


def expand_configs(specs):
    """``[(config path, metafile entry or None)]`` in the order given (metafiles: their order,
    globs: sorted). Metafile entries of all metafiles next to the configs are looked up."""
    import yaml
    configs = []
    for spec in specs:
        if spec.endswith(('.yml', '.yaml')):
            with open(spec) as f:
                models = yaml.safe_load(f).get('Models') or []
            configs += [osp.join(REPO, m['Config']) for m in models if m.get('Config')]
        elif any(c in spec for c in '*?['):
            matches = sorted(glob.glob(spec))
            if not matches:
                raise SystemExit(f'{spec}: no config matches this pattern.')
            configs += matches
        elif osp.isfile(spec):
            configs.append(spec)
        else:
            raise SystemExit(f'{spec}: no such config or metafile. Pass config paths, globs or '
                             f'a configs/<family>/metafile.yml.')
    entries = {}
    for folder in {osp.dirname(osp.abspath(c)) for c in configs}:
        metafile = osp.join(folder, 'metafile.yml')
        if osp.isfile(metafile):
            with open(metafile) as f:
                for model in yaml.safe_load(f).get('Models') or []:
                    entries[_rel(osp.join(REPO, model.get('Config', '')))] = model
    return [(c, entries.get(_rel(c))) for c in dict.fromkeys(configs)]


def paper_value(entry, metric_name):
    """The paper's figure: ``Paper Results`` of the entry (``Results`` hold only what was
    measured with released weights), else ``Results``."""
    entry = entry or {}
    for result in (entry.get('Paper Results') or []) + (entry.get('Results') or []):
        value = (result.get('Metrics') or {}).get(metric_name)
        if value is not None:
            return float(value)
    return None


def schedule_of(cfg):
    train_cfg = cfg.get('train_cfg') or {}
    if train_cfg.get('max_epochs'):
        return f'{train_cfg["max_epochs"]} ep'
    if train_cfg.get('max_iters'):
        iters = train_cfg['max_iters']
        return f'{iters // 1000}k it' if iters % 1000 == 0 else f'{iters} it'
    return '-'


def count_params(cfg):
    """Parameters of the model as built for inference (mmseg: without the auxiliary head)."""
    return sum(p.numel() for p in build_from_config(cfg, inference_only=True).parameters())


# -- checkpoints and test logs ----------------------------------------------------------------
def find_checkpoint(work_dir):
    """The newest ``best_*.pth``, else the latest checkpoint, else None (absolute paths, so
    that the test logs name it the same from any working directory)."""
    path = _find_checkpoint(work_dir)
    return None if path is None else osp.abspath(path)


def _find_checkpoint(work_dir):
    best = glob.glob(osp.join(work_dir, 'best_*.pth'))
    if best:
        return max(best, key=osp.getmtime)
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
        if osp.isfile(osp.join(work_dir, osp.basename(path))):
            return osp.join(work_dir, osp.basename(path))
    numbered = [p for p in glob.glob(osp.join(work_dir, '*.pth'))
                if re.fullmatch(r'(epoch|iter)_\d+\.pth', osp.basename(p))]
    if numbered:
        return max(numbered, key=lambda p: int(re.findall(r'\d+', osp.basename(p))[0]))
    return None


def find_test_logs(work_dir):
    """Every test run under ``work_dir``, newest first: dicts with the metrics, the log path,
    the evaluated checkpoint and whether it was a TTA run."""
    from mmengine.config import Config
    runs = []
    for path in glob.glob(osp.join(work_dir, '**', '*.json'), recursive=True):
        stem = osp.splitext(osp.basename(path))[0]
        run_dir = osp.dirname(path)
        config = osp.join(run_dir, 'vis_data', 'config.py')
        if osp.basename(run_dir) != stem or not osp.isfile(config):
            continue  # not a test log: vis_data/*.json are the scalars of training runs
        with open(path) as f:
            metrics = json.load(f)
        cfg = Config.fromfile(config)
        runs.append(dict(metrics=metrics, log=path, checkpoint=cfg.get('load_from'),
                         # test.py --tta wraps the model: dict(**tta_model, module=model)
                         tta=cfg.model.get('module') is not None,
                         timestamp=stem))
    return sorted(runs, key=lambda r: r['timestamp'], reverse=True)


def run_test(config, checkpoint, work_dir, tta, nproc, cfg_options):
    args = [config, checkpoint, '--work-dir', work_dir] + (['--tta'] if tta else [])
    if cfg_options:
        args += ['--cfg-options'] + cfg_options
    if nproc > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
               TEST_TOOL] + args + ['--launcher', 'pytorch']
    else:
        cmd = [sys.executable, TEST_TOOL] + args
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'tools/test.py failed on {config} with {checkpoint}:\n'
                         f'{proc.stdout[-2000:]}{proc.stderr[-3000:]}')


def _same_file(a, b):
    return a is not None and b is not None and osp.realpath(a) == osp.realpath(b)


# -- rows -------------------------------------------------------------------------------------
def _fmt(value, digits=1):
    return '-' if value is None else f'{value:.{digits}f}'


def _percent(value, scale):
    # COCO logs -1 for a size range without ground-truth objects
    return 'n/a' if value < 0 else f'{value * scale:.1f}'


def load_speeds(paths):
    """``{config path relative to the repo: (inference FPS, train img/s)}`` from benchmark.py
    ``--out`` files (the ``model`` runner; the largest figure if there are several sizes)."""
    speeds = {}
    for path in paths or []:
        with open(path) as f:
            report = json.load(f)
        ips = [sizes['model']['ips'] for sizes in report['results'].values()
               if sizes.get('model')]
        if not ips:
            continue
        fps, train = speeds.get(_rel(report['config']), (None, None))
        if report['mode'] == 'train':
            train = max(ips)
        else:
            fps = max(ips)
        speeds[_rel(report['config'])] = (fps, train)
    return speeds


def gather(configs, work_dir_root, run_tests=False, tta=False, nproc=1, speeds=None,
           cfg_options=None):
    rows = []
    for config, entry in configs:
        cfg = load_config(config)
        name = entry['Name'] if entry else osp.splitext(osp.basename(config))[0]
        work_dir = osp.join(work_dir_root, osp.splitext(osp.basename(config))[0])
        scope = cfg.default_scope
        checkpoint = find_checkpoint(work_dir) if osp.isdir(work_dir) else None
        with_tta = tta and 'tta_model' in cfg and 'tta_pipeline' in cfg
        if checkpoint and run_tests:
            run_test(config, checkpoint, osp.join(work_dir, 'test'), False, nproc, cfg_options)
            if with_tta:
                run_test(config, checkpoint, osp.join(work_dir, 'test_tta'), True, nproc,
                         cfg_options)
        logs = find_test_logs(work_dir) if checkpoint else []
        fps, train_ips = (speeds or {}).get(_rel(config), (None, None))
        flops = ((entry or {}).get('Metadata') or {}).get('FLOPs') or \
            ((entry or {}).get('Paper Metadata') or {}).get('FLOPs')
        common = dict(model=name, config=_rel(config), schedule=schedule_of(cfg),
                      params=f'{count_params(cfg) / 1e6:.2f} M',
                      FLOPs='-' if flops is None else f'{float(flops) / 1e9:.1f} G',
                      checkpoint=checkpoint)
        common['inference FPS'], common['train img/s'] = _fmt(fps, 2), _fmt(train_ips, 2)
        for row_name, key, paper_key, scale, detail_keys, is_tta in METRICS[scope]:
            if is_tta and not with_tta:
                continue
            paper = paper_value(entry, paper_key)
            row = dict(common, metric=row_name, paper=_fmt(paper), ours='-', delta='-',
                       details='', logged={}, log=None)
            run = next((r for r in logs if r['tta'] == is_tta
                        and _same_file(r['checkpoint'], checkpoint)), None)
            if checkpoint is None:
                row['details'] = f'no checkpoint in {work_dir}'
            elif run is None:
                row['details'] = (f'no test log of {osp.basename(checkpoint)} yet (gather with '
                                  f'--run-test{" --tta" if is_tta else ""})')
            elif key not in run['metrics']:
                if not any(k in run['metrics'] for _, k, *_ in METRICS[scope]):
                    raise SystemExit(f'{run["log"]} has none of the {scope} metrics (it has '
                                     f'{", ".join(run["metrics"])}); is it a test of {config}?')
                continue  # not evaluated by this config (e.g. segm of a RetinaNet, top-5)
            else:
                logged = {k: run['metrics'][k] for k in [key] + [k for _, k in detail_keys]
                          if k in run['metrics']}
                ours = logged[key] * scale
                row.update(ours=_fmt(ours, 2 if scale == 1 else 1), logged=logged,
                           log=run['log'],
                           delta='-' if paper is None else f'{ours - paper:+.1f}',
                           details=' / '.join(f'{label} {_percent(run["metrics"][k], scale)}'
                                              for label, k in detail_keys
                                              if k in run['metrics']))
            rows.append(row)
    return rows


def markdown(rows, link_dir=REPO):
    """The table; model names link to their configs, relative to ``link_dir``."""
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    for row in rows:
        link = osp.relpath(osp.join(REPO, row['config']), link_dir)
        cells = [f'[{row["model"]}]({link})' if c == 'model' else str(row[c])
                 for c in COLUMNS]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def update_readme(path, table):
    with open(path) as f:
        text = f.read()
    if text.count(README_START) != 1 or text.count(README_END) != 1 or \
            text.index(README_START) > text.index(README_END):
        raise SystemExit(f'{path}: put one "{README_START}" line and one "{README_END}" line '
                         f'around the results table to be replaced.')
    head, rest = text.split(README_START)
    tail = rest.split(README_END)[1]
    with open(path, 'w') as f:
        f.write(f'{head}{README_START}\n{table}\n{README_END}{tail}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+', help='config paths, globs or metafile.yml files')
    parser.add_argument('--work-dir-root', default='work_dirs',
                        help='holds one work dir per config, named after the config')
    parser.add_argument('--run-test', action='store_true',
                        help='evaluate each checkpoint with tools/test.py first')
    parser.add_argument('--tta', action='store_true',
                        help='with --run-test: also the TTA test, where the config defines one')
    parser.add_argument('--nproc', type=int, default=1,
                        help='with --run-test: processes for torchrun --launcher pytorch')
    parser.add_argument('--cfg-options', nargs='+', default=None,
                        help='passed on to tools/test.py (e.g. a data_root)')
    parser.add_argument('--speed', nargs='+', help='benchmark.py --out JSON files')
    parser.add_argument('--out', default='results',
                        help='writes OUT.md, OUT.csv and OUT.json')
    parser.add_argument('--update-readme', help='README whose marked results table to replace')
    args = parser.parse_args(argv)
    if args.nproc < 1:
        parser.error('--nproc must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    rows = gather(expand_configs(args.configs), args.work_dir_root, args.run_test, args.tta,
                  args.nproc, load_speeds(args.speed), args.cfg_options)
    table = markdown(rows, osp.dirname(osp.abspath(args.update_readme))
                     if args.update_readme else REPO)
    print(table)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out + '.md', 'w') as f:
        f.write(table + '\n')
    with open(args.out + '.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS) + ['config', 'checkpoint', 'log'],
                                extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    with open(args.out + '.json', 'w') as f:
        json.dump(rows, f, indent=1)
    if args.update_readme:
        update_readme(args.update_readme, table)


if __name__ == '__main__':
    main()
