"""docs/model_zoo.md and the mim metadata (model-index.yml + configs/metafiles/*.yml) cannot go
stale silently: every shipped full-size config is documented and indexed, every config, converter
and doc page they name exists, and mim's own search code reads the index."""
import glob
import os
import os.path as osp
import re

import pytest
import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ZOO = osp.join(REPO, 'docs', 'model_zoo.md')
INDEX = osp.join(REPO, 'model-index.yml')


def _full_size_configs():
    """Top-level configs that are not tiny CPU demos (the ones with an official setting)."""
    names = sorted(osp.basename(p) for p in glob.glob(osp.join(REPO, 'configs', '*.py')))
    return [n for n in names if '_tiny_' not in n]


def _index_models():
    with open(INDEX) as f:
        imports = yaml.safe_load(f)['Import']
    models = []
    for rel in imports:
        path = osp.join(REPO, rel)
        assert osp.isfile(path), f'model-index.yml imports a missing metafile: {rel}'
        with open(path) as f:
            doc = yaml.safe_load(f)
        collections = {c['Name'] for c in doc['Collections']}
        for m in doc['Models']:
            assert m['In Collection'] in collections, (rel, m['Name'])
            models.append((rel, m))
    return models


def test_every_full_size_config_is_in_the_model_zoo_page():
    with open(ZOO) as f:
        text = f.read()
    configs = _full_size_configs()
    assert len(configs) >= 20  # the glob found the configs folder
    missing = [n for n in configs if f'`{n}`' not in text]
    assert not missing, f'configs not in docs/model_zoo.md: {missing}'


def test_every_config_named_by_the_model_zoo_page_exists():
    """Our configs head the table rows and follow ``--config`` / ``tools/test*.py``; names of
    official config files appear elsewhere and are not checked."""
    with open(ZOO) as f:
        text = f.read()
    rows = re.findall(r'^\| `([\w.+-]+\.py)` \|', text, flags=re.M)
    commands = re.findall(r'(?:--config|tools/test(?:_ov)?\.py) configs/([\w.+-]+\.py)', text)
    assert len(rows) >= 20 and commands
    top = {osp.basename(p) for p in glob.glob(osp.join(REPO, 'configs', '*.py'))}
    missing = sorted(set(rows + commands) - top)
    assert not missing, f'docs/model_zoo.md names configs that do not exist: {missing}'
    assert len(rows) == len(set(rows)), 'a config has two rows'


def test_converters_named_by_the_model_zoo_page_exist():
    with open(ZOO) as f:
        text = f.read()
    converters = set(re.findall(r'(\w+2ovseg)\.py', text))
    assert {'san2ovseg', 'mmseg_san2ovseg', 'zegclip2ovseg', 'denseclip2ovseg',
            'segvit2ovseg'} <= converters
    for name in converters:
        assert osp.isfile(osp.join(REPO, 'tools', 'model_converters', f'{name}.py')), name


def test_metafiles_parse_and_every_config_they_name_exists():
    from modelindex.load_model_index import load
    index = load(INDEX)  # the loader mim uses; raises on a malformed file
    models = _index_models()
    assert len(index.models) == len(models)
    names = [m['Name'] for _, m in models]
    assert len(names) == len(set(names)), 'duplicate model names'
    for rel, m in models:
        cfg = m['Config']
        assert osp.isfile(osp.join(REPO, cfg)), f'{rel}: {m["Name"]} names a missing {cfg}'
        # mim download keys models by name and saves the config as <name>.py
        assert osp.basename(cfg) == f'{m["Name"]}.py', (rel, m['Name'])
        # no weights of ours are published: only the official release, as Converted From
        assert 'Weights' not in m, (rel, m['Name'])
        conv = m['Metadata']['Converter']
        for path in re.findall(r'tools/model_converters/\w+\.py', conv):
            assert osp.isfile(osp.join(REPO, path)), (rel, path)
        assert 'not reproduced' in m['Metadata']['Results Source'] or 'Results' not in m, \
            (rel, m['Name'])
    for c in index.collections:
        assert osp.isfile(osp.join(REPO, c.readme)), c.readme


def test_every_full_size_config_is_indexed():
    indexed = {osp.basename(m['Config']) for _, m in _index_models()}
    missing = [n for n in _full_size_configs() if n not in indexed]
    assert not missing, f'configs not in model-index.yml metafiles: {missing}'


@pytest.mark.slow
def test_mim_search_reads_the_index(tmp_path, monkeypatch):
    """mim's search code (what `mim search mmseg-ovseg` runs) on our index. mim looks for
    <installed package>/.mim/model-index.yml; point it at a folder whose .mim links here."""
    search = pytest.importorskip('mim.commands.search')
    mim_dir = tmp_path / 'pkg' / '.mim'
    mim_dir.mkdir(parents=True)
    for name in ('model-index.yml', 'configs', 'docs'):
        os.symlink(osp.join(REPO, name), mim_dir / name)
    monkeypatch.setattr(search, 'get_installed_path', lambda package: str(tmp_path / 'pkg'))
    monkeypatch.setattr(search, 'is_installed', lambda package: True)
    table = search.get_model_info('mmseg-ovseg', to_dict=True)
    assert set(table) == {m['Name'] for _, m in _index_models()}
    row = table['san_vitb16_coco-stuff']
    assert row['config'] == 'configs/san_vitb16_coco-stuff.py'
    assert row['training_data'] == 'coco-stuff 164k'  # mim lower-cases strings
    assert row['paper'] and row['readme'] == 'docs/san.md'
    # filtering by dataset as `mim search mmseg-ovseg --training-dataset ...`
    ade = search.get_model_info('mmseg-ovseg', training_datasets=['ADE20K-150'], to_dict=True)
    assert set(ade) == {n for n in table if 'ade20k' in n and not n.startswith('san_')}
