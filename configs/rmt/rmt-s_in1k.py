# The mission's short name: RMT-S on ImageNet-1k, identical to rmt-s_8xb128_in1k.py.
#   python tools/train.py configs/rmt/rmt-s_in1k.py
_base_ = './rmt-s_8xb128_in1k.py'
