"""timm's own model tests on the smallest variant of each family.

``tests/test_models.py`` of the installed timm release, taken from its sdist (downloaded with pip
once into ``~/.cache/mmvit_ext/timm-sdist``; put the sdist there by hand to run offline), runs in
a separate pytest process on ``rmt_t``, ``groupmixformer_m``, ``pale_t`` and ``lavit_t``: config
and meta-device creation, forward, backward, ``features_only``, ``forward_intermediates``,
pruning and torch.fx tracing (TorchScript is not covered).
"""
import os
import os.path as osp
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET

import pytest

from mmvit_ext.models.families import families
from tests.conftest import REPO

timm = pytest.importorskip('timm')

CACHE = osp.join(osp.expanduser('~'), '.cache', 'mmvit_ext', 'timm-sdist')
# the first timm variant of each family (they are declared smallest first)
MODELS = tuple(next(iter(family.timm_variants)) for family in families())
TESTS = ('test_model_default_cfgs', 'test_model_forward', 'test_model_backward',
         'test_model_forward_features', 'test_model_forward_intermediates_features',
         'test_model_forward_intermediates', 'test_prune_intermediate_layers_contract',
         'test_model_forward_fx', 'test_model_backward_fx')

# Imported by pytest before test_models.py, whose test parameters are timm.list_models(...)
# evaluated at import: our models must be registered by then. Its feature-extraction and pruning
# tests run on the timm modules it names (module=[...]); our module joins them. Every other test
# item is deselected, by exact test and model name.
CONFTEST = f'''
import timm
import mmvit_ext.models.timm_models  # noqa: F401  registers the models

_list_models = timm.list_models


def list_models(*args, module='', **kwargs):
    if module:
        module = [module] if isinstance(module, str) else list(module)
        module.append('timm_models')
    return _list_models(*args, module=module, **kwargs)


timm.list_models = list_models


def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if item.originalname in {TESTS!r}
            and getattr(item, 'callspec', None) is not None
            and item.callspec.params.get('model_name') in {MODELS!r}]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep
'''

PYTEST_INI = '''[pytest]
markers =
    base
    forward
    backward
    cfg
    cfg_nonstd
    torchscript
    features
    fxforward
    fxbackward
'''


def timm_test_models_source():
    """Text of tests/test_models.py from the sdist of the installed timm version."""
    version = timm.__version__
    sdist = osp.join(CACHE, f'timm-{version}.tar.gz')
    if not osp.isfile(sdist):
        proc = subprocess.run(
            [sys.executable, '-m', 'pip', 'download', f'timm=={version}', '--no-deps',
             '--no-binary', ':all:', '-d', CACHE], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and osp.isfile(sdist), (
            f'Could not download the sdist of timm {version} (needed for its tests); put '
            f'timm-{version}.tar.gz into {CACHE} to run offline.\n{proc.stdout[-2000:]}'
            f'{proc.stderr[-2000:]}')
    with tarfile.open(sdist) as tar:
        return tar.extractfile(f'timm-{version}/tests/test_models.py').read().decode()


@pytest.mark.slow
def test_timm_model_tests(tmp_path):
    (tmp_path / 'test_models.py').write_text(timm_test_models_source())
    (tmp_path / 'conftest.py').write_text(CONFTEST)
    (tmp_path / 'pytest.ini').write_text(PYTEST_INI)
    report = tmp_path / 'report.xml'
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', 'test_models.py', '-p', 'no:cacheprovider', '-q',
         f'--junitxml={report}'], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True, text=True, timeout=3600)
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert report.is_file(), log
    # test id -> what went wrong (a failure, an error or a skip: each must pass)
    problems = {case.get('name'): [f'{child.tag}: {child.get("message")}' for child in case
                                   if child.tag in ('failure', 'error', 'skipped')]
                for case in ET.parse(report).getroot().iter('testcase')}
    ran = {(name.split('[')[0], model) for name in problems for model in MODELS
           if model in name[name.index('['):].strip('[]').split('-')}
    assert ran == {(test, model) for test in TESTS for model in MODELS}, \
        f'timm tests selected: {sorted(problems)}\n{log}'
    assert not any(problems.values()), \
        '\n'.join(f'{name}: {p}' for name, p in problems.items() if p) + '\n' + log
    assert proc.returncode == 0, log
