"""Procedural image-caption pairs over the concept space, for pretraining the tiny CLIP.

Each sample is a :func:`~mmseg_ovseg.datasets.concepts.render_scene` image with 1-4 objects
and one caption drawn from varied templates: naming every object or only some of them, with
counts ("two red circles and a house.") or a spatial relation ("a blue star left of a
house."). Nothing is stored: sample ``i`` of stream ``seed`` depends only on ``(seed, i)`` and
the generator's parameters (numpy ``default_rng([seed, stream, i])``), so a training run is
reproducible and resumable from its step count alone, and the held-out zero-shot images
(:func:`zero_shot_samples`, another stream) never coincide with training images.

:class:`CaptionDataset` is a torch ``Dataset`` of ``dict(img=float (3, H, W) CLIP-normalised,
caption=str)``.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .concepts import NUM_CLASSES, describe_class, render_scene

# CLIP's image normalisation (RGB, 0-255 scale), as every CLIP config of this package uses.
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)

# Random streams of the same seed: training captions and held-out zero-shot images.
TRAIN_STREAM, ZERO_SHOT_STREAM = 0, 1

NUMBER_WORDS = {2: 'two', 3: 'three', 4: 'four'}

# Templates for a description ``{}`` of the named objects ("a red circle and two houses").
SCENE_TEMPLATES = (
    '{}.',
    'a photo of {}.',
    'a picture of {}.',
    'an image with {}.',
    'there is {}.',
    'a drawing of {}.',
    'this image shows {}.',
    '{} on a grey background.',
)
# Templates naming only some objects (the caption says so).
PARTIAL_TEMPLATES = (
    'a photo with {} and other things.',
    'an image that contains {}.',
    'a picture with {} among other objects.',
    'somewhere in this image there is {}.',
)
# Spatial relations between two objects A and B (by box centres; image y grows downwards).
RELATIONS = {
    'left': ('{a} left of {b}.', '{a} to the left of {b}.'),
    'right': ('{a} right of {b}.', '{a} to the right of {b}.'),
    'above': ('{a} above {b}.', '{a} on top of {b}.'),
    'below': ('{a} below {b}.', '{a} under {b}.'),
}


def article(phrase: str) -> str:
    """``'a red circle'`` / ``'an orange ring'``."""
    return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def noun_phrase(class_index: int, count: int = 1) -> str:
    """``'a red circle'``, ``'two red circles'``, ``'a house'``."""
    info = describe_class(class_index)
    if count == 1:
        return article(info.name)
    return f'{NUMBER_WORDS.get(count, str(count))} {info.plural}'


def join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ', '.join(phrases[:-1]) + ' and ' + phrases[-1]


def _relation(box_a, box_b) -> Optional[str]:
    """Where A is relative to B, or None when their centres are too close to say."""
    ax, ay = (box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2
    bx, by = (box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2
    dx, dy = ax - bx, ay - by
    side = min(box_a[2] - box_a[0], box_b[2] - box_b[0]) * 0.5
    if max(abs(dx), abs(dy)) < side:
        return None
    if abs(dx) >= abs(dy):
        return 'left' if dx < 0 else 'right'
    return 'above' if dy < 0 else 'below'


class CaptionGenerator:
    """Draws ``(image, caption, class_indices, boxes)`` deterministically from ``(seed, i)``.

    Args:
        seed: base seed.
        size: image side in pixels.
        num_objects_probs: probabilities of 1, 2, 3, 4 objects.
        repeat_prob: chance that an object repeats the class of an earlier one (counts).
        relation_prob: chance of a spatial-relation caption when >= 2 distinct objects.
        partial_prob: chance of naming only a subset of the objects (when >= 2 classes).
        scale: object box side as a fraction of the image side, per number of objects (one
            range for a single object, one for several).
        classes: class indices to draw from (default: every concept class, 1..N-1).
    """

    def __init__(self,
                 seed: int = 0,
                 size: int = 64,
                 num_objects_probs: Sequence[float] = (0.4, 0.25, 0.2, 0.15),
                 repeat_prob: float = 0.2,
                 relation_prob: float = 0.25,
                 partial_prob: float = 0.15,
                 scale: Tuple[Tuple[float, float], Tuple[float, float]] = ((0.4, 0.75),
                                                                          (0.3, 0.55)),
                 classes: Optional[Sequence[int]] = None):
        probs = np.asarray(num_objects_probs, np.float64)
        if probs.shape != (4, ) or (probs < 0).any() or abs(probs.sum() - 1) > 1e-6:
            raise ValueError(f'num_objects_probs must be 4 probabilities of 1-4 objects '
                             f'summing to 1, got {num_objects_probs!r}')
        self.seed = int(seed)
        self.size = int(size)
        self.num_objects_probs = probs
        self.repeat_prob = float(repeat_prob)
        self.relation_prob = float(relation_prob)
        self.partial_prob = float(partial_prob)
        self.scale = tuple(tuple(s) for s in scale)
        self.classes = np.arange(1, NUM_CLASSES) if classes is None else np.asarray(classes)
        for c in self.classes:
            describe_class(int(c))

    def sample(self, index: int, stream: int = TRAIN_STREAM, return_label: bool = False):
        """``(image uint8 (H, W, 3), caption str, class_indices list, boxes list)``, plus the
        uint8 ``(H, W)`` label map (indices into ``CONCEPT_CLASSES``, 0 = background) when
        ``return_label`` (the same sample either way: the label costs no random draws)."""
        rng = np.random.default_rng([self.seed, stream, int(index)])
        n = int(rng.choice(4, p=self.num_objects_probs)) + 1
        cls: List[int] = []
        for _ in range(n):
            if cls and rng.random() < self.repeat_prob:
                cls.append(cls[int(rng.integers(len(cls)))])
            else:
                cls.append(int(self.classes[rng.integers(len(self.classes))]))
        scale = self.scale[0] if n == 1 else self.scale[1]
        image, label, boxes = render_scene(rng, self.size, cls, scale=scale,
                                           return_boxes=True)
        caption = self._caption(rng, cls, boxes)
        if return_label:
            return image, caption, cls, boxes, label
        return image, caption, cls, boxes

    def _caption(self, rng: np.random.Generator, cls: List[int], boxes) -> str:
        distinct = list(dict.fromkeys(cls))  # first-appearance order
        counts = {c: cls.count(c) for c in distinct}
        if len(distinct) >= 2 and rng.random() < self.relation_prob:
            # A pair of singly-present classes whose relation is clear.
            singles = [i for i, c in enumerate(cls) if counts[c] == 1]
            pairs = [(i, j) for i in singles for j in singles
                     if i != j and _relation(boxes[i], boxes[j]) is not None]
            if pairs:
                i, j = pairs[int(rng.integers(len(pairs)))]
                rel = _relation(boxes[i], boxes[j])
                templates = RELATIONS[rel]
                text = templates[int(rng.integers(len(templates)))].format(
                    a=noun_phrase(cls[i]), b=noun_phrase(cls[j]))
                return text
        order = [distinct[k] for k in rng.permutation(len(distinct))]
        if len(order) >= 2 and rng.random() < self.partial_prob:
            keep = order[:int(rng.integers(1, len(order)))]
            phrases = [noun_phrase(c, counts[c]) for c in keep]
            template = PARTIAL_TEMPLATES[int(rng.integers(len(PARTIAL_TEMPLATES)))]
        else:
            phrases = [noun_phrase(c, counts[c]) for c in order]
            template = SCENE_TEMPLATES[int(rng.integers(len(SCENE_TEMPLATES)))]
        return template.format(join_phrases(phrases))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> CLIP-normalised float (3, H, W)."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (img - mean) / std


class CaptionDataset(Dataset):
    """``length`` generated image-caption pairs: ``dict(img=(3, H, W) float, caption=str)``.

    Item ``i`` is :meth:`CaptionGenerator.sample` ``(offset + i)``, so disjoint ``offset``
    ranges give disjoint samples of the same stream. Keyword arguments go to
    :class:`CaptionGenerator`.
    """

    def __init__(self, length: int, seed: int = 0, offset: int = 0, **kwargs):
        if length < 1:
            raise ValueError(f'length must be >= 1, got {length}')
        self.length = int(length)
        self.offset = int(offset)
        self.generator = CaptionGenerator(seed=seed, **kwargs)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        image, caption, _, _ = self.generator.sample(self.offset + i)
        return dict(img=to_tensor(image), caption=caption)


def zero_shot_samples(seed: int = 0, per_class: int = 4, size: int = 64,
                      scale: Tuple[float, float] = (0.4, 0.75),
                      classes: Optional[Sequence[int]] = None
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Held-out single-object images for zero-shot classification (their own random stream).

    Returns:
        ``(images uint8 (N, H, W, 3), labels int64 (N,))`` with ``per_class`` images of each
        class index in ``classes`` (default: every concept class 1..N-1).
    """
    classes = list(range(1, NUM_CLASSES)) if classes is None else [int(c) for c in classes]
    images, labels = [], []
    for k in range(per_class):
        for c in classes:
            rng = np.random.default_rng([seed, ZERO_SHOT_STREAM, k, c])
            image, _ = render_scene(rng, size, [c], scale=scale)
            images.append(image)
            labels.append(c)
    return np.stack(images), np.asarray(labels, np.int64)
