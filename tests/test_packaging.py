"""setup.py: runtime-only install_requires, the extras, and mim's ``mmseg_ovseg/.mim``.

setup.py is run in-process (``runpy``) with ``setuptools.setup`` replaced by a recorder; the
``.mim`` tests run it on a copy of the files it links/copies, in a temporary folder.
"""
import ast
import glob
import importlib.metadata as metadata
import json
import os
import os.path as osp
import re
import runpy
import shutil
import sys

import pytest
import setuptools

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def run_setup(monkeypatch, folder=REPO, argv=('egg_info', )):
    """``setup()``'s keyword arguments when ``folder/setup.py`` runs with ``argv``."""
    recorded = {}
    monkeypatch.setattr(setuptools, 'setup', lambda **kw: recorded.update(kw))
    monkeypatch.setattr(sys, 'argv', ['setup.py', *argv])
    monkeypatch.chdir(folder)
    runpy.run_path(osp.join(folder, 'setup.py'), run_name='__main__')
    return recorded


def name(req: str) -> str:
    return re.split(r'[\s<>=!~;\[@]', req.strip(), maxsplit=1)[0].lower().replace('_', '-')


def requirement_lines():
    with open(osp.join(REPO, 'requirements.txt')) as f:
        return [ln.split('#')[0].strip() for ln in f if ln.split('#')[0].strip()]


def test_install_requires_are_runtime_only(monkeypatch):
    kw = run_setup(monkeypatch)
    runtime = {name(r) for r in kw['install_requires']}
    assert not runtime & {'pytest', 'onnx', 'onnxruntime', 'openmim', 'setuptools'}, runtime
    assert {'torch', 'mmengine', 'mmcv', 'mmsegmentation', 'open-clip-torch'} <= runtime
    extras = kw['extras_require']
    assert {name(r) for r in extras['export']} == {'onnx', 'onnxruntime'}
    assert {name(r) for r in extras['tests']} == {'pytest'}
    assert 'openmim' in {name(r) for r in extras['mim']}
    # requirements.txt (what tools/setup_env.sh and CI install) = runtime + these extras,
    # line for line, so the test environment has everything
    lines = requirement_lines()
    assert sorted(lines) == sorted(kw['install_requires'] + extras['tests'] + extras['export']
                                   + extras['mim'])


def test_extras_stay_a_literal():
    """tools/misc/check_gpu_constraints.sh reads EXTRAS with ast.literal_eval."""
    tree = ast.parse(open(osp.join(REPO, 'setup.py')).read())
    node = next(n for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], 'id', None) == 'EXTRAS')
    assert {'vis', 'web', 'export', 'tests', 'mim'} <= set(ast.literal_eval(node.value))


def _module_level_imports(path):
    """Top-level names imported at module level outside ``try`` (not in functions)."""
    names = set()
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


def _closure(dists):
    """``dists`` and everything they require (installed metadata, markers without extras)."""
    seen, todo = set(), list(dists)
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            reqs = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [name(r) for r in reqs if 'extra ==' not in r]
    return seen


def test_module_level_imports_are_runtime_requirements(monkeypatch):
    """Every third-party package mmseg_ovseg imports at module level comes with
    install_requires (directly or as their dependency)."""
    runtime = {name(r) for r in run_setup(monkeypatch)['install_requires']}
    available = _closure(runtime)
    owners = metadata.packages_distributions()
    missing = {}
    for folder, _, files in os.walk(osp.join(REPO, 'mmseg_ovseg')):
        for f in files:
            if not f.endswith('.py'):
                continue
            for mod in _module_level_imports(osp.join(folder, f)):
                if mod == 'mmseg_ovseg' or mod in sys.stdlib_module_names:
                    continue
                dists = {name(d) for d in owners.get(mod, [mod])}
                if not dists & available:
                    missing.setdefault(mod, []).append(osp.relpath(osp.join(folder, f), REPO))
    assert not missing, missing


def _copy_sources(tmp_path):
    for entry in ('setup.py', 'README.md', 'requirements.txt', 'model-index.yml'):
        shutil.copy(osp.join(REPO, entry), tmp_path / entry)
    os.makedirs(tmp_path / 'mmseg_ovseg')
    shutil.copy(osp.join(REPO, 'mmseg_ovseg', 'version.py'), tmp_path / 'mmseg_ovseg')
    for folder in ('configs', 'tools'):
        shutil.copytree(osp.join(REPO, folder), tmp_path / folder)
    os.makedirs(tmp_path / 'tools' / '__pycache__', exist_ok=True)
    (tmp_path / 'tools' / '__pycache__' / 'x.cpython-311.pyc').write_bytes(b'\0')
    return tmp_path / 'mmseg_ovseg' / '.mim'


@pytest.mark.parametrize('command', ['editable_wheel', 'develop'])
def test_mim_links_for_editable_installs(tmp_path, monkeypatch, command):
    mim = _copy_sources(tmp_path)
    run_setup(monkeypatch, str(tmp_path), (command, ))
    assert sorted(os.listdir(mim)) == sorted(MIM_FILES)
    for entry in MIM_FILES:
        assert osp.islink(mim / entry) and not osp.isabs(os.readlink(mim / entry))
        assert osp.samefile(mim / entry, tmp_path / entry)


def test_mim_copies_for_wheels_and_replaces_links(tmp_path, monkeypatch):
    mim = _copy_sources(tmp_path)
    run_setup(monkeypatch, str(tmp_path), ('editable_wheel', ))
    kw = run_setup(monkeypatch, str(tmp_path), ('bdist_wheel', ))
    assert sorted(os.listdir(mim)) == sorted(MIM_FILES)
    for entry in MIM_FILES:
        assert not osp.islink(mim / entry)
    assert not osp.exists(mim / 'tools' / '__pycache__')
    # every config and tool is a package-data file of the wheel, and nothing else is
    patterns = kw['package_data']['mmseg_ovseg']
    # (setuptools expands package_data patterns with glob(recursive=True))
    packaged = {osp.relpath(p, tmp_path / 'mmseg_ovseg') for pat in patterns
                for p in glob.glob(str(tmp_path / 'mmseg_ovseg' / pat), recursive=True)
                if osp.isfile(p)}
    sources = {osp.join('.mim', osp.relpath(osp.join(d, f), tmp_path))
               for top in ('configs', 'tools') for d, _, files in os.walk(tmp_path / top)
               for f in files if '__pycache__' not in d}
    assert sources | {'.mim/model-index.yml'} <= packaged


def test_no_mim_folder_for_metadata_commands(tmp_path, monkeypatch):
    mim = _copy_sources(tmp_path)
    run_setup(monkeypatch, str(tmp_path), ('egg_info', ))
    run_setup(monkeypatch, str(tmp_path), ('dist_info', ))
    assert not mim.exists()


def test_installed_package_has_mim_metadata():
    """The editable install of this checkout (tools/setup_env.sh) has its .mim links."""
    # (the checkout's own mmseg_ovseg.egg-info, on sys.path here, has no direct_url.json)
    urls = [json.loads(d.read_text('direct_url.json') or '{}')
            for d in metadata.distributions(name='mmseg-ovseg')]
    if not any(u.get('dir_info', {}).get('editable') and u.get('url') == 'file://' + REPO
               for u in urls):
        pytest.skip(f'mmseg-ovseg is not installed editable from {REPO}')
    import mmseg_ovseg
    mim = osp.join(osp.dirname(mmseg_ovseg.__file__), '.mim')
    assert sorted(os.listdir(mim)) == sorted(MIM_FILES)
    assert osp.isfile(osp.join(mim, 'configs', 'san_vitb16_coco-stuff.py'))
