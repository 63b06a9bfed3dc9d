"""Write the deterministic demo datasets (classification, COCO instances, ADE20K-style).

    python tools/generate_demo_data.py [--out data/demo] [--seed 0] [--tasks cls coco ade]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit_ext.datasets.demo import generate_demo_datasets  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/demo')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tasks', nargs='+', default=['cls', 'coco', 'ade'])
    args = parser.parse_args()
    for task, path in generate_demo_datasets(args.out, args.seed, args.tasks).items():
        print(f'{task}: {path}')


if __name__ == '__main__':
    main()
