"""Plain reference ("oracle") implementations of the four families, written independently of
the production modules from the papers and the official code.

One module per family. Each defines ``oracle_model(model) -> nn.Module``: a deep copy of a
backbone (or classifier) whose optimised parts are replaced by the plain reference code, sharing
the same weights, so tests and ``tools/analysis_tools/benchmark.py --oracle`` can compare both.
"""
import importlib

FAMILY_MODULES = {
    'RMT': 'rmt',
    'GroupMixFormer': 'groupmixformer',
    'PaleTransformer': 'pale',
    'LaViT': 'lavit',
}


def oracle_for(model):
    """Return the oracle copy of ``model`` (a backbone, or anything with ``.backbone``)."""
    backbone = getattr(model, 'backbone', model)
    name = type(backbone).__name__
    if name not in FAMILY_MODULES:
        raise KeyError(f'No oracle for {name}; known: {", ".join(FAMILY_MODULES)}.')
    module = importlib.import_module(f'{__name__}.{FAMILY_MODULES[name]}')
    return module.oracle_model(model)
