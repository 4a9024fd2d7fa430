"""The tiny CLIP's training data: concept classes, scene rendering and the caption
generator (split from test_tiny_clip.py; tests unchanged)."""
import re

import numpy as np
import pytest
import torch

import mmseg_ovseg  # noqa: F401  (registers 'ovseg-tiny-clip' with open_clip)
from mmseg_ovseg.datasets.captions import CaptionDataset, CaptionGenerator, to_tensor
from mmseg_ovseg.datasets.concepts import (
    COLOR_NAMES,
    COLORS,
    CONCEPT_CLASSES,
    NUM_COMPOSITIONAL,
    OBJECT_NAMES,
    SHAPE_NAMES,
    class_index,
    describe_class,
    draw_object,
    render_scene,
)


# ------------------------------------------------------------------------------ concepts
def test_concept_classes_layout():
    assert CONCEPT_CLASSES[0] == 'background'
    assert len(COLOR_NAMES) >= 8 and len(SHAPE_NAMES) >= 8 and len(OBJECT_NAMES) >= 4
    assert len(CONCEPT_CLASSES) == 1 + len(COLOR_NAMES) * len(SHAPE_NAMES) + len(OBJECT_NAMES)
    assert len(set(CONCEPT_CLASSES)) == len(CONCEPT_CLASSES)
    assert CONCEPT_CLASSES[1] == f'{COLOR_NAMES[0]} {SHAPE_NAMES[0]}'
    info = describe_class(class_index('blue star'))
    assert (info.color, info.shape, info.kind) == ('blue', 'star', None)
    assert describe_class(class_index('house')).kind == 'house'
    with pytest.raises(ValueError, match='background'):
        describe_class(0)


def test_render_scene_deterministic():
    classes = [class_index('red circle'), class_index('house'), class_index('blue stripes')]
    a = render_scene(np.random.default_rng(7), 64, classes)
    b = render_scene(np.random.default_rng(7), 64, classes)
    c = render_scene(np.random.default_rng(8), 64, classes)
    assert a[0].dtype == np.uint8 and a[0].shape == (64, 64, 3) and a[1].shape == (64, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert set(np.unique(a[1])) <= {0, *classes}


@pytest.mark.parametrize('name', ['green circle', 'cyan square', 'yellow ring', 'tree'])
def test_draw_object_label_map(name):
    """The label map carries the id exactly where pixels were painted; geometry is right."""
    cid = class_index(name)
    canvas = np.full((50, 60, 3), 128, np.uint8)
    label = np.zeros((50, 60), np.uint8)
    mask = draw_object(canvas, label, cid, (10, 5, 50, 45), np.random.default_rng(0))
    assert np.array_equal(mask, label == cid)
    assert mask.any() and not mask[:5].any() and not mask[:, :10].any()
    assert not mask[45:].any() and not mask[:, 50:].any()
    changed = (canvas != 128).any(-1)
    assert np.array_equal(changed & ~mask, np.zeros_like(mask))  # nothing painted outside
    info = describe_class(cid)
    if info.color is not None:
        # plain shapes: the painted colour is the named colour (within jitter + lighting)
        rgb = np.array(dict(COLORS)[info.color], np.float32)
        assert np.abs(canvas[mask].mean(0) - rgb).max() < 30
    area = mask.sum()
    expected = {'green circle': np.pi * (0.95 * 20)**2,  # radius 0.95 of the half box
                'cyan square': (0.72 * 40)**2,
                'yellow ring': np.pi * 20**2 * (0.95**2 - 0.55**2)}.get(name)
    if expected is not None:
        assert abs(area - expected) / expected < 0.08, (area, expected)


def test_draw_object_occlusion_and_clipping():
    canvas = np.zeros((40, 40, 3), np.uint8)
    label = np.zeros((40, 40), np.uint8)
    rng = np.random.default_rng(0)
    first, second = class_index('red square'), class_index('blue circle')
    m1 = draw_object(canvas, label, first, (0, 0, 30, 30), rng)
    m2 = draw_object(canvas, label, second, (12, 12, 52, 52), rng)  # past the canvas edge
    assert (m1 & m2).any()
    assert (label[m2] == second).all()  # later objects overwrite
    assert (label[m1 & ~m2] == first).all()
    assert m2[39, 39] == (label[39, 39] == second)


# ------------------------------------------------------------------------------ captions
def test_caption_generator_deterministic():
    g1, g2, g3 = CaptionGenerator(seed=3), CaptionGenerator(seed=3), CaptionGenerator(seed=4)
    for i in (0, 5, 17):
        a, b = g1.sample(i), g2.sample(i)
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert [g1.sample(i)[1] for i in range(10)] != [g3.sample(i)[1] for i in range(10)]
    ds = CaptionDataset(4, seed=3, offset=5)
    item = ds[0]
    assert item['caption'] == g1.sample(5)[1]
    assert torch.equal(item['img'], to_tensor(g1.sample(5)[0]))
    assert item['img'].shape == (3, 64, 64)


def _named_classes(caption):
    """Concept classes a caption names, singular or plural, by whole words."""
    found = set()
    for c in range(1, len(CONCEPT_CLASSES)):
        info = describe_class(c)
        for form in {info.name, info.plural}:
            if re.search(rf'(?<![a-z]){re.escape(form)}(?![a-z])', caption):
                found.add(c)
    return found


@pytest.mark.slow
def test_caption_vocabulary_coverage_and_truth():
    gen = CaptionGenerator(seed=0)
    named_all = set()
    words = set()
    for i in range(600):
        _, caption, classes, boxes = gen.sample(i)
        assert 1 <= len(classes) <= 4 and len(boxes) == len(classes)
        named = _named_classes(caption)
        assert named, caption
        assert named <= set(classes), (caption, [CONCEPT_CLASSES[c] for c in classes])
        named_all |= named
        words |= set(re.findall(r'[a-z]+', caption))
    assert named_all == set(range(1, len(CONCEPT_CLASSES)))  # every concept is captioned
    assert {'two', 'three'} <= words  # counts
    assert {'left', 'right', 'above', 'below'} & words  # relations
    assert len(CONCEPT_CLASSES) - 1 == NUM_COMPOSITIONAL + len(OBJECT_NAMES)


def test_caption_relations_match_boxes():
    gen = CaptionGenerator(seed=1, relation_prob=1.0, num_objects_probs=(0, 1, 0, 0))
    checked = 0
    for i in range(60):
        _, caption, classes, boxes = gen.sample(i)
        m = re.match(r'an? (.+?) (?:to the )?(left|right) of an? (.+)\.$', caption)
        if not m:
            continue
        a, rel, b = class_index(m.group(1)), m.group(2), class_index(m.group(3))
        ca = (boxes[classes.index(a)][0] + boxes[classes.index(a)][2]) / 2
        cb = (boxes[classes.index(b)][0] + boxes[classes.index(b)][2]) / 2
        assert (ca < cb) == (rel == 'left'), caption
        checked += 1
    assert checked >= 5
