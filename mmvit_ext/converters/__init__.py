"""Converters of official checkpoints into this package's keys, one module per family with
official weights (Pale Transformer and LaViT published none). Each has ``convert`` (state_dict
in, state_dict out, strict) and ``convert_file``; ``tools/model_converters/`` holds their
command lines."""
