"""Record the attention of a model during a normal forward.

::

    with record_attention(model) as rec:
        model(inputs)                      # any forward that runs the backbone
    record = rec.get(stage=2, block=0)
    maps = record.weights(query=(y, x))    # explicit weights, see attention_weights

Forward pre-hooks on the attention modules store their inputs (detached); the weights are
computed on request from those inputs and the modules' own parameters by the plain formulas
of :mod:`.attention_weights`, so the forward itself runs its usual fast path. Models fused
for CPU inference are refused: their fused blocks never call the attention modules.
"""
import contextlib
import inspect
from dataclasses import dataclass, field

import torch

from mmvit_ext.models.backbones.base import BaseBackbone
from mmvit_ext.models.families import families, resolve
from mmvit_ext.models.fused.kernels import FusedModule


@dataclass
class AttentionRecord:
    """The inputs one attention module received in the recorded forward."""
    stage: int
    block: int
    kind: str
    module: torch.nn.Module
    rel_pos: torch.nn.Module = None  # RMT: the stage's ManhattanRelPos
    inputs: dict = field(default_factory=dict)
    family: object = None  # the Family that declares the module's type

    @property
    def hw(self):
        """(H, W) of the attention's token grid: its ``hw`` argument where it takes one (LaViT's
        token sequences), else the sides of its (B, H, W, C) input."""
        if 'hw' in self.inputs:
            return tuple(self.inputs['hw'])
        return tuple(self.inputs['x'].shape[1:3])

    @property
    def num_heads(self):
        return self.module.num_heads

    def weights(self, query=None):
        """Explicit attention weights of the recorded forward (batch kept first), computed by
        the family's ``attention.weights``.

        ``query=(y, x)`` (token coordinates) restricts the queries to one token, needed for
        large maps. Returns a dict per kind:

        * ``rmt_full``: ``attention`` (B, N, Lq, L) MaSA, ``plain`` the same q, k without the
          decay, ``prior`` (N, H, W) (only with ``query``);
        * ``rmt_decomposed``: ``w_pass`` (B, H, N, W, W), ``h_pass`` (B, W, N, H, H),
          ``plain`` (B, N, Lq, L), and with ``query``: ``effective`` (B, N, H, W), ``prior``;
        * ``pale``: ``row``, ``column`` (B, h / 2, Lq, L);
        * ``group_mix``: ``attention`` (B, 8, Lq, L), ``key_softmax`` (B, 8, L, d);
        * ``lavit_va`` / ``lavit_la``: ``attention`` (B, h, Lq, K) and ``logits``.
        """
        with torch.no_grad():
            return resolve(self.family.attention.weights)(self, query)


class AttentionRecorder:
    """What :func:`record_attention` yields: the records of the latest forward."""

    def __init__(self):
        self.records = []

    def get(self, stage, block):
        """The record of block ``block`` of stage ``stage`` (negative indices count from the
        end, as in Python)."""
        stages = sorted({r.stage for r in self.records})
        if not stages:
            raise RuntimeError('Nothing was recorded: run a forward of the model inside the '
                               '`with record_attention(model)` block.')
        if not -len(stages) <= stage < len(stages):
            raise IndexError(f'stage {stage} out of range: recorded stages {stages}.')
        stage = stages[stage]
        blocks = [r for r in self.records if r.stage == stage]
        if not -len(blocks) <= block < len(blocks):
            raise IndexError(f'block {block} out of range: stage {stage} has {len(blocks)} '
                             f'attention blocks.')
        return blocks[block]

    def stage(self, stage):
        """All records of one stage, in block order."""
        return [r for r in self.records if r.stage == self.get(stage, 0).stage]


def attention_kinds():
    """Attention module type -> (the kind of record it gives, the family declaring it), over
    every registered family."""
    return {attn_type: (kind, family) for family in families() if family.attention
            for attn_type, kind in family.attention.kinds.items()}


def attention_modules(model):
    """``[(stage, block, attention module, stage's rel_pos or None)]`` of every backbone of this
    package inside ``model``; raises a clear error for fused or unknown models."""
    fused = [name for name, m in model.named_modules() if isinstance(m, FusedModule)]
    if fused:
        raise TypeError(f'This model was fused for CPU inference (mmvit_ext.'
                        f'fuse_for_cpu_inference; e.g. {fused[0]}): its fused blocks never call '
                        f'the attention modules, so their attention cannot be recorded. '
                        f'Visualise the plain (unfused) model built from the config.')
    backbones = [m for m in model.modules() if isinstance(m, BaseBackbone)]
    if not backbones:
        names = ', '.join(f.backbone.__name__ for f in families())
        raise TypeError(f'{type(model).__name__} holds no backbone of mmvit_ext ({names}): '
                        f'nothing to record.')
    kinds = attention_kinds()
    found = []
    for backbone in backbones:
        for i, stage in enumerate(backbone.stages):
            for j, block in enumerate(stage.blocks):
                attn = getattr(block, 'attn', None)
                if type(attn) in kinds:
                    found.append((i, j, attn, getattr(stage, 'rel_pos', None)))
    if not found:
        known = ', '.join(t.__name__ for t in kinds)
        raise TypeError(f'No attention module of a known type ({known}) in the blocks of '
                        f'{type(backbones[0]).__name__}.')
    return found


@contextlib.contextmanager
def record_attention(model):
    """Record the inputs of every attention module of ``model`` while the block runs.

    The model must be in eval mode (the plain formulas use the norms' running statistics and
    no dropout). The hooks are removed on exit; each forward replaces the previous records.
    """
    found = attention_modules(model)
    kinds = attention_kinds()
    training = [f'stage {i} block {j}' for i, j, attn, _ in found if attn.training]
    if training:
        raise RuntimeError(f'record_attention needs an eval-mode model (call model.eval()); '
                           f'in training mode: {", ".join(training[:3])}.')
    recorder = AttentionRecorder()
    handles = []

    def make_hook(stage, block, attn, rel_pos):
        signature = inspect.signature(attn.forward)

        def hook(module, args, kwargs):
            if stage == found[0][0] and block == found[0][1]:
                recorder.records.clear()  # a new forward starts
            bound = signature.bind(*args, **kwargs)
            inputs = {name: value.detach() if isinstance(value, torch.Tensor) else value
                      for name, value in bound.arguments.items()}
            kind, family = kinds[type(attn)]
            recorder.records.append(AttentionRecord(stage, block, kind, attn, rel_pos, inputs,
                                                    family))

        return hook

    try:
        for stage, block, attn, rel_pos in found:
            handles.append(attn.register_forward_pre_hook(
                make_hook(stage, block, attn, rel_pos), with_kwargs=True))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
