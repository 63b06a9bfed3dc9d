"""Convert official GroupMixFormer checkpoints (github AILab-CVC/GroupMixFormer) to mmvit_ext.

The released ``{'model': state_dict}`` files (or a bare state_dict) with ``norm4``/``head``
become mmpretrain ImageClassifier checkpoints, backbone-only ones ``backbone.*`` checkpoints.
Strict: unknown keys stop the conversion with the full list. See
:mod:`mmvit_ext.converters.groupmixformer`.

The official training keeps no EMA, so a released file holds one set of weights, the one
every config here starts from.

Usage::

    python tools/model_converters/groupmixformer_to_mmvit.py SRC DST [--arch m|t|s|b|l]
        [--entry auto|model|model_ema] [--trust-checkpoint]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, too

from mmvit_ext.converters.groupmixformer import convert_file  # noqa: E402
from mmvit_ext.checkpoint import checkpoint_errors_exit  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint ({"model": sd} or a bare state_dict)')
    parser.add_argument('dst', help='output mmengine checkpoint')
    parser.add_argument('--arch', default=None, help='m, t, s, b or l (default: inferred)')
    parser.add_argument('--entry', default='auto',
                        help='checkpoint entry: auto (state_dict, then model), model, model_ema')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load SRC with weights_only=False: runs any code the file holds '
                             '(prints the globals it imports first); only for trusted files')
    args = parser.parse_args(argv)
    with checkpoint_errors_exit():
        print(convert_file(args.src, args.dst, args.arch, args.entry, trust=args.trust_checkpoint))


if __name__ == '__main__':
    main()
