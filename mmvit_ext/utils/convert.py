"""Compatibility alias for ``mmvit_ext.models.backbones.base``, which other work is changing
now: the mismatch check lives in :mod:`mmvit_ext.checkpoint`; import from there."""
from mmvit_ext.checkpoint import check_state_dict  # noqa: F401
