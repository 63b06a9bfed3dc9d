"""One registration per backbone family.

Each backbone file ends with ``FAMILY = register(Family(...))``: the one place that says which
oracle, attention records, timm models and tiny test arch belong to its backbone. The oracles,
the attention recorder, the timm models, ``tools/analysis_tools/device_check.py`` and the tests
read the families from here instead of keeping tables of their own, so a new family touches its
own files and one import line in ``mmvit_ext/models/backbones/__init__.py``. The fused
CPU-inference copies need no entry: ``fuse_for_cpu_inference`` replaces any module that has a
``fused_copy()`` method.

What a family names in packages that import the backbones (oracles, visualization) it gives as
``'module:attribute'`` strings, imported on use, so that importing a backbone imports neither.
"""
import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

Ref = Union[str, Callable]


# eq=False (both records): compared by identity, and hashable although they hold dicts
@dataclass(frozen=True, eq=False)
class AttentionRecording:
    """How :func:`mmvit_ext.visualization.record_attention` records a family's attention.

    Attributes:
        kinds (dict): attention module type (``block.attn`` of the backbone's blocks) -> the
            kind of its records (``AttentionRecord.kind``).
        weights (str | callable): ``weights(record, query)`` -> dict of explicit attention
            weights, behind ``AttentionRecord.weights``.
        figures (str | callable, optional): what ``visualization.maps.draw_attention`` calls:
            ``figures(record, token, heads, path, title, image, marker, extent)``, or with
            ``per_stage`` ``figures(records, token, heads, path, title, image, marker)`` ->
            dict of figure name -> PNG path.
        per_stage (bool): the figures show all blocks of a stage together (LaViT compares each
            layer's attention with the previous layer's).
    """
    kinds: dict
    weights: Ref
    figures: Optional[Ref] = None
    per_stage: bool = False


@dataclass(frozen=True, eq=False)
class Family:
    """What the package derives from one backbone family.

    Attributes:
        name (str): short name: ``configs/<name>/``, the prefix of its timm names and figures.
        backbone (type): the backbone class (a ``BaseBackbone``).
        tiny_arch (dict): a small custom arch with every attention form of the family, for the
            tests and ``device_check.py`` (read-only: copy it to change it).
        oracle (str | callable): ``oracle(model)`` -> the plain reference copy of ``model`` (a
            backbone or anything with ``.backbone``), sharing its weights
            (:func:`mmvit_ext.oracles.oracle_for`).
        attention (AttentionRecording, optional): how its attention is recorded and drawn.
        timm_variants (dict): timm model name -> the config it is built from: a model-index
            name, or the path of a config file (a family outside this repository's index).
        timm_first_conv (str): the stem's first conv in the timm model, adapted by timm to
            ``in_chans`` when loading pretrained weights.
        notrace (tuple): module types torch.fx records as single calls (timm's
            ``register_notrace_module``): their forward branches on the traced sizes (shape
            checks, padding, position tables cached per size), on the dtype or on the autograd
            state, which a symbolic trace cannot follow.
    """
    name: str
    backbone: type
    tiny_arch: dict
    oracle: Ref
    attention: Optional[AttentionRecording] = None
    timm_variants: dict = field(default_factory=dict)
    timm_first_conv: str = ''
    notrace: tuple = ()


_FAMILIES = {}  # backbone class -> Family, in registration order
_WATCHERS = []


def register(family):
    """Add ``family`` to the lookup and tell the watchers; returns it."""
    taken = [f.backbone.__name__ for f in _FAMILIES.values()
             if f.name == family.name or f.backbone is family.backbone]
    if taken:
        raise ValueError(f'Family {family.name} ({family.backbone.__name__}): the name or the '
                         f'backbone is registered already ({taken[0]}).')
    _FAMILIES[family.backbone] = family
    for watcher in _WATCHERS:
        watcher(family, True)
    return family


def unregister(family):
    """Remove ``family`` from the lookup and from what the watchers derived from it."""
    del _FAMILIES[family.backbone]
    for watcher in _WATCHERS:
        watcher(family, False)


def watch(watcher):
    """Call ``watcher(family, registered)`` for every family now and at each later
    :func:`register` (``True``) or :func:`unregister` (``False``): for registries outside this
    package that must follow the families (timm's models)."""
    _WATCHERS.append(watcher)
    for family in families():
        watcher(family, True)


def families():
    """Every registered family: the package's own (in the import order of the backbones
    package, which registers them), then any registered later."""
    importlib.import_module('mmvit_ext.models.backbones')
    return list(_FAMILIES.values())


def family_of(backbone):
    """The family of a backbone (instance or class), or None."""
    return _FAMILIES.get(backbone if isinstance(backbone, type) else type(backbone))


def resolve(ref):
    """A callable as it is, or the attribute a ``'module:attribute'`` string names."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(':')
    return getattr(importlib.import_module(module), name)
