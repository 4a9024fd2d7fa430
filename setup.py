"""mmseg-ovseg's packaging.

``install_requires`` is ``requirements.txt`` minus the packages of the extras that are not
needed to import and run the package (``tests``, ``export``, ``mim``): ``requirements.txt`` stays
the one list ``tools/setup_env.sh`` and CI install (everything the test suite needs) and
``tools/misc/check_gpu_constraints.sh`` resolves; ``EXTRAS`` stays a literal (that script reads
it with ``ast.literal_eval``).

``mmseg_ovseg/.mim/`` (``configs``, ``tools``, ``model-index.yml``) is what ``mim`` reads from
an installed package (``mim search``, ``mim train mmseg_ovseg``, ``mim download``), made as
mmseg's ``setup.py`` does (``add_mim_extension``): symbolic links for an editable install,
copies for a wheel or an sdist.
"""
import os
import os.path as osp
import platform
import re
import shutil
import sys
import warnings

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def get_version():
    ns = {}
    with open(osp.join(HERE, 'mmseg_ovseg', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def requirement_name(line: str) -> str:
    """``'onnxruntime>=1.17'`` -> ``'onnxruntime'`` (lower case, ``_`` as ``-``)."""
    return re.split(r'[\s<>=!~;\[@]', line.strip(), maxsplit=1)[0].lower().replace('_', '-')


def parse_requirements(path='requirements.txt', exclude=()):
    """The requirement lines of ``path`` (comments dropped), without the packages named in
    ``exclude``."""
    skip = {requirement_name(r) for r in exclude}
    reqs = []
    with open(osp.join(HERE, path)) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line and requirement_name(line) not in skip:
                reqs.append(line)
    return reqs


MIM_FILES = ('configs', 'tools', 'model-index.yml')
MIM_IGNORE = shutil.ignore_patterns('__pycache__', '*.pyc', '*.pth', '*.pt')


def add_mim_extension():
    """Fill ``mmseg_ovseg/.mim`` with ``MIM_FILES``: links for an editable install (``develop``
    or PEP 660 ``editable_wheel``), copies when building a wheel or an sdist; nothing for the
    other commands (``egg_info``, ``dist_info``, ...)."""
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        mode = 'copy' if platform.system() == 'Windows' else 'symlink'
    elif commands & {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'}:
        mode = 'copy'
    else:
        return
    mim_path = osp.join(HERE, 'mmseg_ovseg', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(HERE, name)
        dst = osp.join(mim_path, name)
        if not osp.exists(src):
            warnings.warn(f'add_mim_extension: {src} not found, not in mmseg_ovseg/.mim')
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=MIM_IGNORE)
        else:
            shutil.copyfile(src, dst)


# Optional ecosystem tools: `pip install -e .[vis,export]`; `tests`, `export` and `mim` are
# also in requirements.txt (installed by tools/setup_env.sh), not in install_requires.
EXTRAS = {
    # TensorBoard logging (mmengine's TensorboardVisBackend) and mmseg's
    # tools/analysis_tools/analyze_logs.py (seaborn)
    'vis': ['tensorboard', 'seaborn'],
    # tools/webui.py, the web page for open-vocabulary inference; tested with gradio 6.31.0,
    # which caps Pillow below 13 (the dev venv keeps Pillow 13: gradio installed --no-deps)
    'web': ['gradio>=6.0,<7'],
    # ONNX export and runtime checks (tools/deploy/export_onnx.py, tests/test_export_onnx.py)
    'export': ['onnx>=1.15', 'onnxruntime>=1.17'],
    # the test suite
    'tests': ['pytest'],
    # `mim search/train/download mmseg_ovseg`; openmim imports pkg_resources, which
    # setuptools 81 removed
    'mim': ['openmim==0.3.9', 'setuptools>=77,<81'],
}
EXTRAS['all'] = sorted({pkg for pkgs in EXTRAS.values() for pkg in pkgs})
NOT_RUNTIME = EXTRAS['tests'] + EXTRAS['export'] + EXTRAS['mim']

if __name__ == '__main__':
    add_mim_extension()


setup(
    name='mmseg-ovseg',
    version=get_version(),
    description='Open-vocabulary and CLIP/ViT segmentation (SAN, ZegCLIP, DenseCLIP, SegViT, '
    'ReSTR) as an MMSegmentation 1.x plugin',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'configs', 'tools', 'docs')),
    package_data={'mmseg_ovseg': [
        'clip/vocabularies/*.txt', 'clip/model_configs/*.json',
        '.mim/model-index.yml', '.mim/configs/**/*.py', '.mim/configs/**/*.yml',
        '.mim/tools/**/*.py', '.mim/tools/**/*.sh', '.mim/tools/**/*.json']},
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=parse_requirements(exclude=NOT_RUNTIME),
    extras_require=EXTRAS,
    license='Apache License 2.0',
    zip_safe=False,
)
