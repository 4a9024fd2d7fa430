"""The in-package tiny CLIP: its open_clip model config and its cached pretrained weights.

``mmseg_ovseg/clip/model_configs/*.json`` are registered with open_clip when this package is
imported, so ``clip_model='ovseg-tiny-clip'`` works wherever an open_clip name does
(``CLIPVisionTransformer``, ``OVCLIPTextEncoder``, ``open_clip.create_model``,
``open_clip.get_tokenizer``). ``ovseg-tiny-clip`` is a 64x64 ViT (patch 8, 4 blocks, width 64,
4 heads) and a 2-block text transformer (width 64, 2 heads, 24 tokens, open_clip's BPE
vocabulary) with a 64-d joint embedding and ``nn.GELU`` (not QuickGELU: its weights are
ours, not OpenAI's).

:func:`ensure_tiny_clip` returns the pretrained checkpoint, pretraining it with
``tools/pretrain_clip.py``'s default preset ('demo') when the file is missing
(docs/tiny_clip.md).
"""
import os.path as osp
import warnings
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

TINY_CLIP_NAME = 'ovseg-tiny-clip'
MODEL_CONFIG_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'model_configs')
DEFAULT_CHECKPOINT = osp.join('work_dirs', 'tiny_clip', f'{TINY_CLIP_NAME}.pt')

_registered = False


def register_model_configs() -> None:
    """Register this package's open_clip model configs (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


# Pretraining settings: plain contrastive CLIP training, 1,200 steps (the 'plain' preset; the
# 'demo' preset below adds the region terms). docs/tiny_clip.md has the measured accuracy
# and time.
PRETRAIN_DEFAULTS = dict(
    model=TINY_CLIP_NAME,
    steps=1200,
    batch_size=128,
    lr=2e-3,
    warmup=40,
    weight_decay=0.1,
    seed=0,
    eval_per_class=4,
    eval_seed=1,
    save_every=25,
    # Region-text losses (mmseg_ovseg/clip/region_losses.py); 0: plain CLIP training.
    # dense_weight: on the patch tokens; sls_weight: on SAN's SLS path from block sls_split.
    dense_weight=0.0,
    sls_weight=0.0,
    sls_split=1,
    # A zero-shot split (get_zero_shot_split spec, e.g. 'concepts') whose unseen classes get
    # no region supervision (they are learnt from captions only); None: all classes.
    region_exclude=None,
    # Fraction of the schedule after which the region terms are switched on (0: from the
    # first step); the steps before are plain CLIP steps.
    region_start=0.0,
    # Checkpoint (plain open_clip state dict) to start from instead of a random init.
    init=None,
)
# The plain 1,200-step checkpoint, which the continuation presets below start from (make it
# with ``tools/pretrain_clip.py --preset plain --out`` this path).
PLAIN_CHECKPOINT = osp.join('work_dirs', 'tiny_clip', f'{TINY_CLIP_NAME}-plain.pt')
# Named recipes (``tools/pretrain_clip.py --preset``); each overrides PRETRAIN_DEFAULTS.
# 'demo' (what ``make demo`` / :func:`ensure_tiny_clip` pretrain): 800 steps from scratch with
# both region terms from the first step, the 'concepts' split's unseen classes left out of
# them, at lr 3e-3 (zero-shot 81.1 % against 78.9 % at 2e-3, same cost). 'plain': the earlier
# demo recipe (plain CLIP, 1,200 steps). 'region' / 'region-sls' continue the plain
# checkpoint for 250 steps with the region terms; 'long' is the same continuation without
# them (their control). Measured in docs/tiny_clip.md.
_REGION_SLS = dict(dense_weight=1.0, sls_weight=1.0, region_exclude='concepts')
_CONTINUE = dict(init=PLAIN_CHECKPOINT, steps=250, lr=1e-3, warmup=20)
_DEMO = dict(_REGION_SLS, steps=800, lr=3e-3)
PRETRAIN_PRESETS = {
    'demo': _DEMO,
    # The demo recipe at three times the steps (~1,170 process CPU s, one thread): zero-shot
    # 99.6 % against 81.1 %; the CLIP the open-vocabulary tables are measured with
    # (docs/open_vocab.md). Over the demo's 5-minute budget, so not what make demo pretrains.
    'demo-2400': dict(_DEMO, steps=2400),
    'plain': dict(),
    'long': dict(_CONTINUE),
    'region': dict(_CONTINUE, dense_weight=1.0),
    # Both region losses, the benchmark's unseen classes left out of them.
    'region-sls': dict(_CONTINUE, **_REGION_SLS),
}
ZERO_SHOT_TEMPLATE = 'a photo of a {}.'


def _preset(preset: str) -> dict:
    if preset not in PRETRAIN_PRESETS:
        raise KeyError(f'unknown tiny CLIP preset {preset!r}; known: {sorted(PRETRAIN_PRESETS)}')
    return PRETRAIN_PRESETS[preset]


def checkpoint_for_preset(preset: str) -> str:
    """Where a preset's checkpoint is cached: ``DEFAULT_CHECKPOINT`` for ``'demo'``, else
    ``work_dirs/tiny_clip/ovseg-tiny-clip-<preset>.pt`` (``PLAIN_CHECKPOINT`` for ``'plain'``)."""
    _preset(preset)
    if preset == 'demo':
        return DEFAULT_CHECKPOINT
    return osp.join(osp.dirname(DEFAULT_CHECKPOINT), f'{TINY_CLIP_NAME}-{preset}.pt')


def read_logit_scale(path: str) -> float:
    """The learnt temperature (ln) of an open_clip checkpoint: what SAN's ``logit_scale``
    should be for it."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    if 'logit_scale' not in state:
        raise KeyError(f'{path}: no logit_scale tensor (not an open_clip CLIP state dict?)')
    return float(state['logit_scale'])


def ensure_tiny_clip(path: str = DEFAULT_CHECKPOINT, preset: str = 'demo',
                     **pretrain_kwargs) -> str:
    """Path of the pretrained tiny CLIP checkpoint; pretrain it first if it does not exist.

    Pretraining uses ``preset`` of :data:`PRETRAIN_PRESETS` (default ``'demo'``);
    ``pretrain_kwargs`` override it (``steps``, ``batch_size``, ``lr``, ``seed``,
    ``threads``, ...); an interrupted pretraining resumes from its training state file. An
    existing checkpoint is returned as is (delete it to pretrain again), with a warning when
    its recorded recipe (``<path>.recipe.json``, or its training state) differs from the one
    asked for or is unknown: a checkpoint cached under an earlier preset gives other results
    than the documented ones.
    """
    from .tiny_pretrain import pretrain, read_recipe, recipe_of
    kwargs = dict(_preset(preset), resume=True)
    kwargs.update(pretrain_kwargs)
    if osp.isfile(path):
        _warn_other_recipe(path, read_recipe(path), recipe_of(dict(PRETRAIN_DEFAULTS, **kwargs)))
        return path
    pretrain(out=path, **kwargs)
    if not osp.isfile(path):
        raise RuntimeError(f'pretraining finished without writing {path}')
    return path


def _warn_other_recipe(path: str, recipe: Optional[dict], wanted: dict) -> None:
    if recipe is None:
        warnings.warn(f'tiny CLIP {path}: its pretraining recipe is unknown (no '
                      f'{osp.basename(path)}.recipe.json or training state next to it); if it '
                      'was cached under an earlier preset, results will differ from the '
                      'documented ones: delete it to pretrain the current one')
        return
    diff = {k: (recipe[k], wanted[k]) for k in wanted if recipe.get(k) != wanted[k]}
    if diff:
        changes = ', '.join(f'{k}={old!r} (now {new!r})' for k, (old, new) in diff.items())
        warnings.warn(f'tiny CLIP {path} was pretrained with {changes}: results will differ '
                      'from the documented ones; delete it to pretrain the current recipe')


def build_clip(model: str = TINY_CLIP_NAME, seed: int = 0) -> nn.Module:
    """A randomly initialised open_clip ``CLIP`` of ``model`` (what
    ``open_clip.create_model(model)`` builds), seeded."""
    from .builder import create_clip
    torch.manual_seed(seed)
    return create_clip(model)


@torch.no_grad()
def zero_shot_accuracy(model: nn.Module, tokenizer: Callable, images: np.ndarray,
                       labels: np.ndarray, class_names: Sequence[str],
                       class_ids: Optional[Sequence[int]] = None,
                       template: str = ZERO_SHOT_TEMPLATE, batch_size: int = 256) -> Dict:
    """CLIP zero-shot classification: argmax over ``template.format(name)`` embeddings.

    Args:
        images: uint8 ``(N, H, W, 3)``; labels: ``(N,)`` ids in ``class_ids`` (default
            ``range(len(class_names))``).

    Returns:
        dict with ``top1`` (percent), ``per_class`` (percent per class name) and
        ``confusions`` (the 10 most frequent ``(true, predicted)`` name pairs).
    """
    from mmseg_ovseg.datasets.captions import to_tensor
    was_training = model.training
    model.eval()
    class_ids = list(range(len(class_names))) if class_ids is None else list(class_ids)
    text = model.encode_text(tokenizer([template.format(n) for n in class_names]))
    text = F.normalize(text, dim=-1)
    preds = []
    for i in range(0, len(images), batch_size):
        x = torch.stack([to_tensor(im) for im in images[i:i + batch_size]])
        feats = F.normalize(model.encode_image(x), dim=-1)
        preds.append((feats @ text.t()).argmax(-1))
    pred = np.asarray(class_ids)[torch.cat(preds).numpy()]
    model.train(was_training)
    correct = pred == labels
    per_class = {class_names[k]: float(100 * correct[labels == c].mean())
                 for k, c in enumerate(class_ids) if (labels == c).any()}
    pairs: Dict[tuple, int] = {}
    name_of = dict(zip(class_ids, class_names))
    for t, p in zip(labels[~correct], pred[~correct]):
        key = (name_of[int(t)], name_of[int(p)])
        pairs[key] = pairs.get(key, 0) + 1
    confusions = sorted(pairs.items(), key=lambda kv: -kv[1])[:10]
    return dict(top1=float(100 * correct.mean()), per_class=per_class,
                confusions=confusions, num_images=int(len(labels)))


def evaluate_concepts(model: nn.Module, model_name: str = TINY_CLIP_NAME, seed: int = 1,
                      per_class: int = 4) -> Dict:
    """Zero-shot top-1 over the full concept vocabulary (every class but 'background') on
    held-out single-object images (:func:`~mmseg_ovseg.datasets.captions.zero_shot_samples`)."""
    from mmseg_ovseg.datasets.captions import zero_shot_samples
    from mmseg_ovseg.datasets.concepts import CONCEPT_CLASSES
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    images, labels = zero_shot_samples(seed=seed, per_class=per_class, size=int(size))
    return zero_shot_accuracy(model, open_clip.get_tokenizer(model_name), images, labels,
                              CONCEPT_CLASSES[1:], class_ids=range(1, len(CONCEPT_CLASSES)))


