"""Write the EMA or the trained (non-EMA) weights of a checkpoint saved with mmengine's EMAHook.

Our ImageNet configs with an EMA (the RMT ones) save the EMA weights in ``state_dict`` and the
trained ones in ``ema_state_dict``. The RMT downstream configs start from the non-EMA weights,
as the official det/seg code did:

    python tools/model_converters/select_ema_weights.py \
        work_dirs/rmt-s_8xb128_in1k/epoch_300.pth checkpoints/rmt-s_in1k.pth --weights source

``--weights ema`` writes the EMA weights (what the validation during training scored).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmvit_ext.checkpoint import checkpoint_errors_exit  # noqa: E402
from mmvit_ext.converters.ema import WEIGHTS, extract_weights  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='mmengine checkpoint saved with EMAHook')
    parser.add_argument('dst', help='output checkpoint (state_dict and meta only)')
    parser.add_argument('--weights', choices=WEIGHTS, required=True,
                        help='ema: the averaged weights; source: the weights the optimizer '
                             'trained (non-EMA)')
    args = parser.parse_args(argv)
    try:
        with checkpoint_errors_exit():
            count = extract_weights(args.src, args.dst, args.weights)
    except (KeyError, FileNotFoundError) as err:
        raise SystemExit(err.args[0] if err.args else str(err))
    print(f'{args.weights} weights of {args.src} ({count} tensors) -> {args.dst}')


if __name__ == '__main__':
    main()
