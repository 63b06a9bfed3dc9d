"""Packaging: metadata in setup.cfg; here only the ``.mim`` folder that openmim reads.

As in the OpenMMLab toolboxes, ``configs/``, ``tools/`` and ``model-index.yml`` are shipped
inside the package as ``mmvit_ext/.mim/`` so that ``mim search / train / test mmvit_ext`` find
them: copied for a wheel (``pip install .``), symlinked for an editable install
(``pip install -e .``), so that edits in the clone are what mim sees.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import setup

MIM_FILES = ['configs', 'tools', 'model-index.yml']


def add_mim_extension():
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'build', 'install')):
        mode = 'copy'
    else:
        return
    repo = osp.dirname(osp.abspath(__file__))
    mim_dir = osp.join(repo, 'mmvit_ext', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(repo, name), osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


add_mim_extension()
setup()
