"""Plots of training runs and of benchmark.py figures, into PNG files (headless matplotlib).

Usage::

    # training curves of one or several runs (work dirs, run dirs or vis_data/scalars.json)
    python tools/analysis_tools/plot_results.py curves RUN [RUN ...] --keys loss lr coco/bbox_mAP
        [--legend NAME ...] --out curves.png

    # speed or memory versus input size of several configs (benchmark.py --sizes ... --out)
    python tools/analysis_tools/plot_results.py speed BENCH.json [BENCH.json ...]
        [--metric ips|ms|peak_mb] [--runner model] --out speed.png

``curves``, like the upstream ``analyze_logs.py plot_curve``: one panel per key, one line per
run, over the ``step`` mmengine logged it at (training scalars per iteration; validation metrics
per epoch or iteration, as the config logs them). A work dir holds one run per timestamp; its
newest run with a ``vis_data/scalars.json`` is used.
``speed``: one line per benchmark file (its ``--runner``, default ``model``) over the input
sizes; sizes that ran out of memory are left out.
"""
import argparse
import glob
import json
import os.path as osp

SPEED_LABELS = dict(ips='throughput (img/s)', ms='latency (ms)', peak_mb='peak memory (MB)')


def scalars_file(run):
    """The ``scalars.json`` of a run given as the file, a run dir or a work dir."""
    if osp.isfile(run):
        return run
    direct = osp.join(run, 'vis_data', 'scalars.json')
    if osp.isfile(direct):
        return direct
    found = sorted(glob.glob(osp.join(run, '*', 'vis_data', 'scalars.json')))
    if not found:
        raise SystemExit(f'{run}: no vis_data/scalars.json in it or in its run dirs; pass a '
                         f'work dir of tools/train.py, one of its <timestamp> dirs or the file.')
    return found[-1]  # timestamps sort in time order


def read_scalars(path):
    """``{key: ([steps], [values])}`` of every numeric key of an mmengine scalars.json."""
    curves = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            step = record.get('step')
            for key, value in record.items():
                if key != 'step' and isinstance(value, (int, float)):
                    steps, values = curves.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(value)
    return curves


def _figure(panels):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    return fig, axes[0]


def plot_curves(runs, keys, legends=None):
    """A figure with one panel per key and one line per run (labelled by ``legends``)."""
    legends = legends or [osp.basename(osp.normpath(run)) for run in runs]
    if len(legends) != len(runs):
        raise SystemExit(f'--legend: {len(legends)} names for {len(runs)} runs.')
    data = [read_scalars(scalars_file(run)) for run in runs]
    for run, curves in zip(runs, data):
        missing = [k for k in keys if k not in curves]
        if missing:
            raise SystemExit(f'{run} logged no {", ".join(missing)}; it has '
                             f'{", ".join(sorted(curves))}.')
    fig, axes = _figure(len(keys))
    for ax, key in zip(axes, keys):
        for legend, curves in zip(legends, data):
            steps, values = curves[key]
            ax.plot(steps, values, marker='o' if len(steps) < 20 else None, label=legend)
        ax.set_title(key)
        ax.set_xlabel('step')
        ax.legend()
    fig.tight_layout()
    return fig


def plot_speed(reports, metric='ips', runner='model', legends=None):
    """A figure of ``metric`` versus input size, one line per benchmark.py ``--out`` file."""
    if metric not in SPEED_LABELS:
        raise SystemExit(f'--metric must be one of {", ".join(SPEED_LABELS)}.')
    fig, axes = _figure(1)
    ax = axes[0]
    for i, path in enumerate(reports):
        with open(path) as f:
            report = json.load(f)
        try:
            points = sorted((int(size), row[runner][metric])
                            for size, row in report['results'].items()
                            if row.get(runner) and row[runner][metric] is not None)
        except ValueError:
            raise SystemExit(f'{path}: its inputs are not square sizes; plot the random-input '
                             f'modes (benchmark.py --sizes ...).')
        if not points:
            raise SystemExit(f'{path} has no "{runner}" figures (runners: '
                             f'{", ".join(next(iter(report["results"].values())))}).')
        label = legends[i] if legends else osp.splitext(osp.basename(report['config']))[0]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker='o', label=label)
    ax.set_xlabel('input size (pixels per side)')
    ax.set_ylabel(SPEED_LABELS[metric])
    ax.legend()
    fig.tight_layout()
    return fig


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='plot', required=True)
    curves = sub.add_parser('curves', help='training curves from vis_data/scalars.json')
    curves.add_argument('runs', nargs='+')
    curves.add_argument('--keys', nargs='+', default=['loss'])
    curves.add_argument('--legend', nargs='+')
    curves.add_argument('--out', required=True)
    speed = sub.add_parser('speed', help='speed / memory vs input size of benchmark outputs')
    speed.add_argument('reports', nargs='+')
    speed.add_argument('--metric', default='ips', choices=sorted(SPEED_LABELS))
    speed.add_argument('--runner', default='model')
    speed.add_argument('--legend', nargs='+')
    speed.add_argument('--out', required=True)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.plot == 'curves':
        fig = plot_curves(args.runs, args.keys, args.legend)
    else:
        fig = plot_speed(args.reports, args.metric, args.runner, args.legend)
    fig.savefig(args.out, dpi=100)
    print(f'Saved {args.out}')


if __name__ == '__main__':
    main()
