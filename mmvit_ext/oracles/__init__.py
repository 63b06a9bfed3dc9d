"""Plain reference ("oracle") implementations of the four families, written independently of
the production modules from the papers and the official code.

One module per family. Each defines ``oracle_model(model) -> nn.Module``: a deep copy of a
backbone (or classifier) whose optimised parts are replaced by the plain reference code, sharing
the same weights, so tests and ``tools/analysis_tools/benchmark.py --oracle`` can compare both.
A family names its oracle in its registration (``Family.oracle``).
"""
import torch

from mmvit_ext.models.families import families, family_of, resolve


def oracle_for(model):
    """Return the oracle copy of ``model`` (a backbone, or anything with ``.backbone``)."""
    backbone = getattr(model, 'backbone', model)
    family = family_of(backbone)
    if family is None:
        known = ', '.join(f.backbone.__name__ for f in families())
        raise KeyError(f'No oracle for {type(backbone).__name__}; known: {known}.')
    return resolve(family.oracle)(model)


@torch.no_grad()
def randomize_(module, seed=0):
    """Give every floating parameter and buffer of the state_dict a distinct random value
    (0.2-scale, BN running variances in [0.5, 1.5)), so that comparisons with an oracle test
    every weight, attention scores are far from uniform and eval BatchNorms matter; derived
    buffers (``Relpos``) keep their values. Returns ``module``."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in module.state_dict().items():
        if not tensor.is_floating_point() or 'Relpos' in name:
            continue
        if name.endswith('running_var'):
            tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
        else:
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)
    return module
