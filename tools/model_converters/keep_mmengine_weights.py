"""Keep the weights and meta of a checkpoint saved by a plain mmengine run.

Such a checkpoint pickles its message_hub (``HistoryBuffer`` objects, numpy arrays, bound
methods), which safe loading refuses. This loads it with ``weights_only=True``, those objects
replaced by inert placeholders (nothing of the file runs; anything else it wants is refused),
and writes a checkpoint of its ``state_dict`` and ``meta`` that loads safely:

    python tools/model_converters/keep_mmengine_weights.py SRC DST
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, too

from mmvit_ext.checkpoint import checkpoint_errors_exit, keep_weights  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='checkpoint of a plain mmengine run')
    parser.add_argument('dst', help='output checkpoint (state_dict and meta)')
    args = parser.parse_args(argv)
    with checkpoint_errors_exit():
        count = keep_weights(args.src, args.dst)
    print(f'{count} tensors of {args.src} -> {args.dst}')


if __name__ == '__main__':
    main()
