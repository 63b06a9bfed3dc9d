"""Compatibility alias for ``mmvit_ext.models.timm_models``, which other work is changing now:
checkpoint code lives in :mod:`mmvit_ext.checkpoint`; import from there."""
from mmvit_ext.checkpoint import load_timm_pretrained  # noqa: F401
