"""Vocabularies, zero-shot splits and prompt templates (mmseg_ovseg.clip)."""
import ast
import hashlib
import os
import os.path as osp
import subprocess

import pytest

from mmseg_ovseg.clip.templates import get_templates
from mmseg_ovseg.clip.vocabularies import (
    MMSEG_VOCABULARIES,
    SYNTHETIC_CLASSES,
    VOCAB_DIR,
    get_vocabulary,
    get_zero_shot_split,
    list_vocabularies,
)

COUNTS = dict(coco_stuff171=171, ade150=150, ade847=847, pc59=59, pc459=459, voc20=20,
              synthetic=8, concepts=55)


@pytest.mark.parametrize('name,count', sorted(COUNTS.items()))
def test_registered_counts_unique(name, count):
    names = get_vocabulary(name)
    assert len(names) == count
    assert len(set(names)) == count
    assert all(n == n.strip() and n for n in names)


def test_known_names_and_content():
    assert set(COUNTS) == set(list_vocabularies())
    assert get_vocabulary('synthetic') == list(SYNTHETIC_CLASSES)
    assert SYNTHETIC_CLASSES == ('background', 'red circle', 'green square', 'blue triangle',
                                 'yellow stripes', 'purple dots', 'orange ring', 'cyan checker')
    voc = get_vocabulary('voc20')
    assert voc[0] == 'aeroplane' and voc[-1] == 'tvmonitor'
    ade847 = get_vocabulary('ade847')
    assert ade847[:3] == ['wall', 'building, edifice', 'sky']
    pc459 = get_vocabulary('pc459')
    assert pc459[:3] == ['accordion', 'aeroplane', 'air conditioner']
    # ADE's 'bed ' (trailing space in mmseg) is stripped.
    assert 'bed' in get_vocabulary('ade150')


def test_matches_mmseg_metainfo():
    pytest.importorskip('mmcv.ops')
    from mmseg.datasets import (
        ADE20KDataset,
        COCOStuffDataset,
        PascalContextDataset59,
        PascalVOCDataset,
    )

    def classes(ds):
        return [c.strip() for c in ds.METAINFO['classes']]

    assert get_vocabulary('coco_stuff171') == classes(COCOStuffDataset)
    assert get_vocabulary('ade150') == classes(ADE20KDataset)
    assert get_vocabulary('pc59') == classes(PascalContextDataset59)
    assert get_vocabulary('voc20') == classes(PascalVOCDataset)[1:]


def test_mmseg_vocabularies_are_read_from_mmseg_get_classes():
    from mmseg.utils import get_classes
    sources = dict(coco_stuff171=('cocostuff', 0), ade150=('ade', 0), pc59=('pcontext', 0),
                   voc20=('voc', 1))  # VOC: 'background' dropped
    assert set(MMSEG_VOCABULARIES) == set(sources)
    for name, (alias, skip) in sources.items():
        assert get_vocabulary(name) == [c.strip() for c in get_classes(alias)[skip:]], name
        # one source only: no copy of mmseg's list in the package
        assert not osp.exists(osp.join(VOCAB_DIR, name + '.txt')), name
    assert get_classes('voc')[0] == 'background'


# SAN's official lists (MendelXu/SAN e19262d1a23992fc2cef934d6756b89ff50fe5c3), recorded as
# data: count, first and last name and the sha256 of the names joined by '\n', taken with
# ast.literal_eval from san/data/datasets/register_ade20k_full.py
# (ADE20K_SEM_SEG_FULL_CATEGORIES, the "name" fields) and register_pcontext.py
# (PCONTEXT_FULL_SEM_SEG_CATEGORIES).
SAN_REPO = os.environ.get('SAN_OFFICIAL_REPO', '/work/.mirror/MendelXu+SAN/repo')
SAN_LISTS = {
    'ade847': (847, 'wall', 'adding machine, totalizer, totaliser',
               'ee311c5f3b780a16a58f40726927f6c41149860a5fca6c1116ea1dca129efd8b'),
    'pc459': (459, 'accordion', 'wool',
              'c9fe8ff7083d2572021691666a700755d8f4e1c634585ba9919a3f3a2c834538'),
}
# Where SAN's registration spells a class of our mmseg-sourced vocabularies differently.
SAN_SPELLINGS = {'pc59': {49: ('table', 'diningtable')}, 'voc20': {19: ('tvmonitor', 'tv')}}


@pytest.mark.parametrize('name', sorted(SAN_LISTS))
def test_san_vocabularies_are_the_recorded_official_lists(name):
    count, first, last, sha = SAN_LISTS[name]
    names = get_vocabulary(name)
    assert (len(names), names[0], names[-1]) == (count, first, last)
    assert hashlib.sha256('\n'.join(names).encode()).hexdigest() == sha


def _san_literal(path, var):
    try:
        src = subprocess.run(['git', '-C', SAN_REPO, 'show', f'HEAD:{path}'], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f'official SAN repository not available at {SAN_REPO}')
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == var:
            return ast.literal_eval(node.value)
    raise AssertionError(f'{var} not found in SAN {path}')


def test_vocabularies_against_official_san_repository():
    """Re-derives the recorded facts from the fetched official repository (skipped without)."""
    if not osp.isdir(SAN_REPO):
        pytest.skip(f'official SAN repository not available at {SAN_REPO}')
    d = 'san/data/datasets/'
    ade = [c['name'] for c in _san_literal(d + 'register_ade20k_full.py',
                                           'ADE20K_SEM_SEG_FULL_CATEGORIES')]
    assert get_vocabulary('ade847') == ade
    assert get_vocabulary('pc459') == list(
        _san_literal(d + 'register_pcontext.py', 'PCONTEXT_FULL_SEM_SEG_CATEGORIES'))
    coco = [c['name'] for c in _san_literal(d + 'register_coco_stuff_164k.py', 'COCO_CATEGORIES')]
    assert get_vocabulary('coco_stuff171') == coco
    san = dict(pc59=list(_san_literal(d + 'register_pcontext.py', 'PCONTEXT_SEM_SEG_CATEGORIES')),
               voc20=list(_san_literal(d + 'register_voc.py', 'CLASS_NAMES')))
    for name, official in san.items():
        ours = get_vocabulary(name)
        assert len(ours) == len(official)
        diff = {i: (a, b) for i, (a, b) in enumerate(zip(ours, official)) if a != b}
        assert diff == SAN_SPELLINGS[name], name


def test_concepts_vocabulary_is_the_dataset_classes():
    from mmseg_ovseg.datasets.concept_seg import CONCEPT_SEG_CLASSES
    assert get_vocabulary('concepts') == list(CONCEPT_SEG_CLASSES)


def test_vocabulary_files_start_with_provenance():
    files = sorted(f for f in os.listdir(VOCAB_DIR) if f.endswith('.txt'))
    assert files == ['ade847.txt', 'concepts.txt', 'pc459.txt']
    for f in files:
        with open(osp.join(VOCAB_DIR, f), encoding='utf-8') as fh:
            assert fh.readline().startswith('# '), f


def test_spec_forms(tmp_path):
    assert get_vocabulary(['cat', ' dog ']) == ['cat', 'dog']
    assert get_vocabulary(('cat', 'dog')) == ['cat', 'dog']
    assert get_vocabulary('cat, dog ,grass') == ['cat', 'dog', 'grass']
    path = tmp_path / 'v.txt'
    path.write_text('# my classes\ncat\n\n  dog\n# comment\ngrass, lawn\n')
    assert get_vocabulary(str(path)) == ['cat', 'dog', 'grass, lawn']


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="Unknown vocabulary 'ade151'.*ade150"):
        get_vocabulary('ade151')
    with pytest.raises(ValueError, match='Empty vocabulary'):
        get_vocabulary([])
    empty = tmp_path / 'empty.txt'
    empty.write_text('# nothing\n\n')
    with pytest.raises(ValueError, match='Empty vocabulary.*empty.txt'):
        get_vocabulary(str(empty))
    with pytest.raises(ValueError, match=r"duplicate names: \['cat'\]"):
        get_vocabulary(['cat', 'dog', 'cat'])
    with pytest.raises(ValueError, match='duplicate'):
        get_vocabulary('cat, dog, cat')
    with pytest.raises(TypeError, match=r"non-string entries.*\(1, 3\)"):
        get_vocabulary(['cat', 3])
    with pytest.raises(ValueError, match='empty names'):
        get_vocabulary('cat,,dog')
    with pytest.raises(FileNotFoundError, match='missing.txt'):
        get_vocabulary(str(tmp_path / 'missing.txt'))
    binary = tmp_path / 'bin.txt'
    binary.write_bytes(b'\xff\xfe\x00\x81')
    with pytest.raises(OSError, match='bin.txt'):
        get_vocabulary(str(binary))
    with pytest.raises(TypeError):
        get_vocabulary(5)


def test_zero_shot_splits():
    seen, unseen = get_zero_shot_split('voc20')
    assert unseen == [15, 16, 17, 18, 19] and seen == list(range(15))
    seen, unseen = get_zero_shot_split('coco_stuff171')
    assert unseen == [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]
    assert len(seen) == 156 and not set(seen) & set(unseen)
    coco = get_vocabulary('coco_stuff171')
    assert [coco[i] for i in unseen] == [
        'cow', 'giraffe', 'suitcase', 'frisbee', 'skateboard', 'carrot', 'scissors',
        'cardboard', 'clouds', 'grass', 'playingfield', 'river', 'road', 'tree',
        'wall-concrete']
    pc = get_vocabulary('pc59')
    seen, unseen = get_zero_shot_split('pc59')
    assert sorted(pc[i] for i in unseen) == sorted([
        'cow', 'motorbike', 'sofa', 'cat', 'boat', 'fence', 'bird', 'tvmonitor', 'keyboard',
        'aeroplane'])
    assert len(seen) == 49
    seen, unseen = get_zero_shot_split('synthetic')
    assert unseen == [6, 7] and seen == list(range(6))


def test_zero_shot_split_from_config():
    assert get_zero_shot_split([3, 1], num_classes=5) == ([0, 2, 4], [1, 3])
    assert get_zero_shot_split(dict(seen=[0, 1], unseen=[4]), num_classes=5) == ([0, 1], [4])
    with pytest.raises(ValueError, match='out of range'):
        get_zero_shot_split([5], num_classes=5)
    with pytest.raises(ValueError, match='both seen and unseen'):
        get_zero_shot_split(dict(seen=[0, 1], unseen=[1]), num_classes=5)
    with pytest.raises(ValueError, match='num_classes is required'):
        get_zero_shot_split([1])
    with pytest.raises(ValueError, match="No zero-shot split for 'ade150'"):
        get_zero_shot_split('ade150')
    with pytest.raises(ValueError, match='is for 20 classes'):
        get_zero_shot_split('voc20', num_classes=21)


def test_templates():
    assert len(get_templates('vild')) == 14
    assert len(get_templates('zegclip')) == 15
    imagenet = get_templates('imagenet')
    assert len(imagenet) == 80 and len(set(imagenet)) == 80
    assert 'a bad photo of a {}.' in imagenet and 'itap of my {}.' in imagenet
    assert get_templates('single') == ['a photo of a {}.']
    for name in ('vild', 'imagenet', 'zegclip'):
        assert all(t.count('{}') == 1 for t in get_templates(name))
    assert get_templates(['{} here', 'a {}']) == ['{} here', 'a {}']
    with pytest.raises(ValueError, match="Unknown template set 'vilde'"):
        get_templates('vilde')
    with pytest.raises(ValueError, match=r"templates\[1\].*exactly one"):
        get_templates(['a {}', 'no slot'])
    with pytest.raises(TypeError, match=r'templates\[0\]'):
        get_templates([3])
    with pytest.raises(ValueError, match='empty'):
        get_templates([])
