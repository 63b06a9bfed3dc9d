"""Convert official RMT checkpoints (github qhfan/RMT) to mmvit_ext checkpoints.

Classification checkpoints (entries ``model`` / ``model_ema``, or a bare state_dict) become
mmpretrain ImageClassifier checkpoints; official mmdet/mmseg checkpoints keep their neck and
heads with the backbone keys renamed. Strict: unknown keys stop the conversion with the full
list. See :mod:`mmvit_ext.converters.rmt`.

Which entry: the downstream configs (``checkpoints/rmt-<v>_in1k.pth``) start from the non-EMA
``model`` weights, as the official det/seg code did; ``model_ema`` is the classifier that the
README accuracies of S/B/L were measured with (write it to another file name for testing).

Usage::

    python tools/model_converters/rmt_to_mmvit.py SRC DST [--entry auto|model|model_ema]
        [--arch T|S|B|L] [--trust-checkpoint]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, too

from mmvit_ext.converters.rmt import convert_file  # noqa: E402
from mmvit_ext.checkpoint import checkpoint_errors_exit  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output mmvit_ext checkpoint')
    parser.add_argument('--entry', default='auto',
                        help='checkpoint entry: auto (state_dict, then model), model, model_ema')
    parser.add_argument('--arch', choices=['T', 'S', 'B', 'L', 't', 's', 'b', 'l'],
                        help='variant; inferred from the tensor shapes when omitted')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load SRC with weights_only=False: runs any code the file holds '
                             '(prints the globals it imports first); only for trusted files')
    args = parser.parse_args(argv)
    with checkpoint_errors_exit():
        print(convert_file(args.src, args.dst, args.entry, args.arch, trust=args.trust_checkpoint))


if __name__ == '__main__':
    main()
