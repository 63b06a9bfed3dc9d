"""What the four backbones share: the standard OpenMMLab backbone API.

Every backbone of this package is laid out the same way, which is what lets this class do the
API work once:

* ``patch_embed``: the stem (stride 4);
* ``stages[i]``: an ``nn.Module`` with an optional ``downsample`` applied first and ``blocks``
  (an ``nn.ModuleList``), in network order;
* ``out_norms[i]`` (optional): the norm applied to stage ``i``'s output for dense prediction.

Conventions (as in mmpretrain):

* ``out_indices``: stages whose outputs are returned, a tuple of NCHW maps.
* ``frozen_stages``: ``-1`` freezes nothing, ``k >= 0`` freezes the stem and the first ``k``
  stages (parameters and norm statistics).
* ``norm_eval``: keep every BatchNorm (SyncBatchNorm included) in eval mode while training.
* ``with_cp``: activation checkpointing of every block.
* ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)``: loaded strictly; a missing
  file or mismatched keys stop with a message that says how to fix it. Without ``init_cfg``
  the family's official initialisation applies (``default_init_cfg``, through mmengine), then
  submodules with an initialisation of their own (their ``init_weights``) run it.
"""
import copy
import os.path as osp
import re

import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from torch.nn.modules.batchnorm import _BatchNorm

from mmvit_ext.checkpoint import (CheckpointMismatchError, check_state_dict,
                                  install_safe_loading)


def check_drop_path_rate(rate, family):
    """Stochastic depth needs a rate in [0, 1): 1 drops every residual branch (NaN outputs
    after the rescaling by 1 / (1 - rate)), a negative rate would silently act as 0."""
    if not 0 <= rate < 1:
        raise ValueError(f'{family}: drop_path_rate must be in [0, 1), got {rate}.')


def dense_output(x):
    """A stage output ``(B, C, H, W)`` as returned by ``forward``: NCHW-contiguous, because
    mmcv's CPU RoIAlign reads its input's memory as NCHW and returns wrong values for a
    channels-last map (a permuted (B, H, W, C) tensor) without any error."""
    return x.contiguous()


class BackboneStage(nn.Module):
    """One stage of the shared layout: ``downsample`` (None or a module, applied first) then
    ``blocks``; families add their own per-stage members as attributes."""

    def __init__(self, blocks, downsample=None):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)


class BaseBackbone(BaseModule):
    """Base of the hierarchical backbones of this package.

    Subclasses define ``arch_settings`` (variant name -> dict), ``arch_keys`` (the keys a custom
    arch dict must have), ``converter`` (the tool that makes official weights loadable),
    optionally ``default_init_cfg``, and build ``patch_embed``, ``stages`` and optionally
    ``out_norms``, then call ``self._freeze_stages()`` at the end of ``__init__``.
    """
    arch_settings: dict = {}
    arch_keys: tuple = ('embed_dims', 'depths')
    converter: str = ''
    #: The initialisation used without ``init_cfg``: that of the official code of all four
    #: families for Linear and LayerNorm; convs and BatchNorms keep PyTorch's defaults.
    default_init_cfg = [dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
                        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)]
    # Keys a backbone has but a classification checkpoint lacks (they keep their init).
    pretrained_optional_keys: tuple = ('out_norms.', )

    def __init__(self, arch, out_indices=(3, ), frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, pretrained=None):
        if pretrained is not None:  # mmseg base configs pass model.pretrained here
            if init_cfg is not None:
                raise ValueError('Give either `pretrained` or `init_cfg`, not both.')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is None:
            init_cfg = copy.deepcopy(self.default_init_cfg)
        super().__init__(init_cfg=init_cfg)
        self.arch = self.resolve_arch(arch)
        num_stages = len(self.arch['depths'])
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        for i in out_indices:
            if not -num_stages <= i < num_stages:
                raise ValueError(f'out_indices {tuple(out_indices)} out of range: '
                                 f'{type(self).__name__} has {num_stages} stages (valid indices '
                                 f'0..{num_stages - 1}, or -{num_stages}..-1 from the end).')
        out_indices = tuple(i + num_stages if i < 0 else i for i in out_indices)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}.')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

    # -- variants -----------------------------------------------------------------------------
    @classmethod
    def resolve_arch(cls, arch):
        """Return the arch dict for a variant name (any case) or check a custom dict."""
        name = cls.__name__
        if isinstance(arch, str):
            settings = {k.lower(): v for k, v in cls.arch_settings.items()}
            if arch.lower() not in settings:
                raise ValueError(f'Unknown {name} arch "{arch}". Available: '
                                 f'{", ".join(cls.arch_settings)}, or a dict with keys '
                                 f'{", ".join(cls.arch_keys)}.')
            return dict(settings[arch.lower()])
        if not isinstance(arch, dict):
            raise TypeError(f'{name} arch must be a variant name or a dict, got {type(arch)}.')
        missing = [k for k in cls.arch_keys if k not in arch]
        unknown = [k for k in arch if k not in cls.arch_keys]
        if missing or unknown:
            raise ValueError(f'Custom {name} arch: missing keys {missing}, unknown keys '
                             f'{unknown}; expected exactly {", ".join(cls.arch_keys)}.')
        lengths = {k: len(v) for k, v in arch.items() if isinstance(v, (list, tuple))}
        if len(set(lengths.values())) > 1:
            raise ValueError(f'Custom {name} arch: per-stage lists differ in length: {lengths}.')
        return dict(arch)

    @property
    def depths(self):
        return list(self.arch['depths'])

    @property
    def size_divisor(self):
        """``(div_h, div_w)``: input sides for which a program traced or exported with dynamic
        H and W computes what this backbone computes are the multiples of these. 32, the output
        stride: every strided conv then halves exactly and the size arithmetic traced at one
        such size holds at all of them."""
        return 32, 32

    # -- running blocks -----------------------------------------------------------------------
    def run_block(self, block, *args):
        """Run one block, with activation checkpointing when ``with_cp`` is set."""
        if self.with_cp and self.training and any(getattr(a, 'requires_grad', False)
                                                  for a in args):
            return cp.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def channels_last_output(self, index, x):
        """Stage ``index``'s output for ``forward`` from its (B, H, W, C) map: the stage's
        output norm if there is one, then (B, C, H, W) as :func:`dense_output`."""
        if getattr(self, 'out_norms', None) is not None:
            x = self.out_norms[index](x)
        return dense_output(x.permute(0, 3, 1, 2))

    # -- freezing and norm_eval ---------------------------------------------------------------
    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed]
        for i in range(self.frozen_stages):
            modules.append(self.stages[i])
            if getattr(self, 'out_norms', None) is not None and self.out_norms[i] is not None:
                modules.append(self.out_norms[i])
        return modules

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):  # SyncBatchNorm is a _BatchNorm too
                    module.eval()
        return self

    # -- layer-wise learning-rate decay -------------------------------------------------------
    def get_layer_depth(self, param_name, prefix=''):
        """Layer id of a parameter for layer-wise lr decay: stem 0, block ``k`` (in network
        order) ``k + 1``, a stage's downsample that of its first block, the rest (output norms,
        neck, head) the last id. Returns ``(layer_id, num_layers)``.
        """
        num_layers = sum(self.depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.startswith('patch_embed'):
            return 0, num_layers
        match = re.match(r'stages\.(\d+)\.(?:blocks\.(\d+))?', name)
        if match:
            stage, block = int(match.group(1)), match.group(2)
            first = sum(self.depths[:stage]) + 1
            return first + (int(block) if block is not None else 0), num_layers
        return num_layers - 1, num_layers

    # -- pretrained weights -------------------------------------------------------------------
    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix'))
            self._is_init = True
            return
        super().init_weights()
        # mmengine only calls the init_weights of BaseModule children; plain modules deeper
        # down (e.g. LaViT's identity-initialised Theta/Psi) override the generic init here.
        for module in self.modules():
            if module is not self and not isinstance(module, BaseModule) \
                    and callable(getattr(module, 'init_weights', None)):
                module.init_weights()

    def load_pretrained(self, checkpoint, prefix=None):
        """Load ``checkpoint`` strictly (except ``pretrained_optional_keys``)."""
        family = type(self).__name__
        if '://' not in checkpoint and not osp.isfile(checkpoint):
            raise FileNotFoundError(
                f'{family}: pretrained checkpoint "{checkpoint}" does not exist. Convert the '
                f'official weights with `python {self.converter} OFFICIAL.pth {checkpoint}`, or '
                f'train on ImageNet with configs/ and point init_cfg.checkpoint at the result. '
                f'To train from scratch on purpose, add '
                f'`--cfg-options model.backbone.init_cfg=None`.')
        install_safe_loading()  # also when a script calls init_weights() outside the tools
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        state_dict = ckpt.get('state_dict', ckpt)
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()
                          if k.startswith(prefix)}
            if not state_dict:
                raise CheckpointMismatchError(
                    f'{family}: checkpoint "{checkpoint}" has no key starting with "{prefix}": '
                    f'set init_cfg.prefix to the backbone\'s prefix in it, or leave it out.')
        else:
            state_dict = {k[len('backbone.'):] if k.startswith('backbone.') else k: v
                          for k, v in state_dict.items()}
        check_state_dict(
            state_dict, self, self.pretrained_optional_keys,
            what=f'{family}: checkpoint "{checkpoint}" (arch {self.arch})',
            hint=f'Is it an official checkpoint that needs `python {self.converter}`, or a '
                 f'checkpoint of another variant? For a full classifier/detector checkpoint set '
                 f'init_cfg.prefix="backbone.".')
        self.load_state_dict(state_dict, strict=False)
