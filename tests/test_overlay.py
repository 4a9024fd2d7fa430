"""The overlay: name-keyed palette, text that scales with the image, unpainted background,
Unicode names or a warning naming what is drawn instead (split from test_inferencer.py; tests
unchanged)."""
import warnings

import numpy as np

import mmseg_ovseg  # noqa: F401
from mmseg_ovseg.apis import class_palette, draw_overlay, name_color
from mmseg_ovseg.apis.overlay import font_for, text_size_for
from mmseg_ovseg.apis.palette import MIN_DISTANCE


# ---------------------------------------------------------------------------- overlay
def test_palette_is_keyed_by_name():
    names = ['background', 'cat', 'dog', 'grass', 'sky', 'tree', 'road', 'car']
    pal = dict(zip(names, class_palette(names)))
    shuffled = names[::-1]
    assert dict(zip(shuffled, class_palette(shuffled))) == pal
    assert class_palette(['Cat ']) == class_palette(['cat'])
    # the colour of a name, unless a similar colour is taken in the same vocabulary
    assert class_palette(['cat', 'grass'])[0] == name_color('cat')
    assert class_palette(['grass', 'cat'])[1] == name_color('cat')
    for i, a in enumerate(names):  # distinct colours within a palette
        for b in names[i + 1:]:
            assert np.linalg.norm(np.subtract(pal[a], pal[b])) >= MIN_DISTANCE, (a, b)


def _scene(size):
    h, w = size
    labels = np.zeros((h, w), np.int64)
    labels[h // 4:h // 2, w // 4:w // 2] = 1
    labels[h // 2:, w // 2:] = 2
    image = np.full((h, w, 3), 90, np.uint8)
    return image, labels


def _ink_rows(panel):
    """Rows of the legend panel holding dark (text) pixels."""
    return np.flatnonzero((panel.min(axis=2) < 60).any(axis=1))


def test_overlay_scales_with_the_image_and_keeps_the_image_unpainted():
    classes = ['background', 'cat', 'dog']
    pal = class_palette(classes)
    heights = {}
    for size in ((96, 128), (960, 1280)):
        image, labels = _scene(size)
        out = draw_overlay(image, labels, classes, pal, with_labels=False)
        panel = out[:, size[1]:]
        rows = _ink_rows(panel)
        heights[size] = rows[-1] - rows[0]
        assert panel.shape[1] > text_size_for(*size)
        # no background: its pixels are the image, the others blended at the opacity
        out = draw_overlay(image, labels, classes, pal, opacity=0.25, with_labels=False,
                           legend=False, draw_background=False)
        assert np.array_equal(out[labels == 0], image[labels == 0])
        cat = np.rint(image[0, 0] * 0.75 + np.array(pal[1]) * 0.25)
        assert np.array_equal(out[labels == 1][0], cat.astype(np.uint8))
    # legend text follows the image (12 px at least)
    ratio = text_size_for(960, 1280) / text_size_for(96, 128)
    assert ratio > 2 and heights[(960, 1280)] > 0.8 * ratio * heights[(96, 128)]
    out = draw_overlay(*_scene((64, 64)), classes, pal, opacity=0.0, legend=False,
                       with_labels=False)
    assert np.array_equal(out, _scene((64, 64))[0])


def test_overlay_draws_unicode_names_or_says_what_it_draws():
    image, labels = _scene((200, 200))
    greek = draw_overlay(image, labels, ['background', 'γάτα', 'dog'],
                         class_palette(['background', 'γάτα', 'dog']), with_labels=False)
    path, drawn = font_for('γάτα')
    if path is not None and drawn == 'γάτα':  # a font with Greek glyphs: drawn as such
        qmarks = draw_overlay(image, labels, ['background', '????', 'dog'],
                              class_palette(['background', 'γάτα', 'dog']), with_labels=False)
        assert not np.array_equal(greek, qmarks)
    cjk = '猫'
    font_for.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        path, drawn = font_for(cjk)
    if drawn != cjk:  # no CJK font here: drawn as '?' and a warning names the character
        assert drawn == '?' and any(cjk in str(w.message) for w in caught)
    out = draw_overlay(image, labels, ['background', cjk, 'dog'],
                       class_palette(['background', cjk, 'dog']))
    assert out.shape[0] == 200 and out.shape[1] > 200
