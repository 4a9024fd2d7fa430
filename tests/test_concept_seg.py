"""The generated zero-shot benchmark (datasets/concept_seg.py), its split, configs and the
vocabulary switch of inductive training (engine/zero_shot_vocab_hook.py)."""
import glob
import hashlib
import json
import os
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmseg_ovseg.clip.vocabularies import get_vocabulary, get_zero_shot_split
from mmseg_ovseg.datasets.concept_seg import (
    CONCEPT_INDEX,
    CONCEPT_SEG_CLASSES,
    generate_concept_dataset,
    render_concept_sample,
)
from mmseg_ovseg.datasets.concepts import CONCEPT_CLASSES, describe_class

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# the zero-shot configs (the closed-set DenseCLIP ones: tests/test_denseclip_concepts.py)
CONFIGS = sorted(c for c in glob.glob(osp.join(REPO, 'configs', '*_tiny_concepts*.py'))
                 if not osp.basename(c).startswith('denseclip'))
UNSEEN_NAMES = ['red circle', 'orange ring', 'yellow star', 'green triangle', 'cyan triangle',
                'blue circle', 'purple star', 'pink ring', 'flower']


def _digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(osp.join(dirpath, name), 'rb') as f:
                out[osp.relpath(osp.join(dirpath, name), root)] = hashlib.sha1(
                    f.read()).hexdigest()
    return out


# ------------------------------------------------------------------------ classes and split
def test_classes_are_tiny_clip_concepts():
    assert get_vocabulary('concepts') == list(CONCEPT_SEG_CLASSES)
    assert len(CONCEPT_SEG_CLASSES) == 55 and CONCEPT_SEG_CLASSES[0] == 'background'
    # every class is a concept of the tiny CLIP's caption data, at the index drawn
    for label, name in enumerate(CONCEPT_SEG_CLASSES):
        assert CONCEPT_CLASSES[CONCEPT_INDEX[label]] == name


def test_split_is_novel_compositions_plus_one_object():
    seen, unseen = get_zero_shot_split('concepts')
    assert [CONCEPT_SEG_CLASSES[i] for i in unseen] == UNSEEN_NAMES
    assert sorted(seen + unseen) == list(range(55)) and 0 in seen
    seen_parts = [describe_class(CONCEPT_INDEX[i]) for i in seen if i]
    seen_colors = {p.color for p in seen_parts}
    seen_shapes = {p.shape for p in seen_parts}
    kinds = []
    for i in unseen:
        info = describe_class(CONCEPT_INDEX[i])
        if info.kind is None:  # a new composition of a seen colour and a seen shape
            assert info.color in seen_colors and info.shape in seen_shapes, info
        else:
            kinds.append(info.kind)
    assert kinds == ['flower']


# ------------------------------------------------------------------------ generation
def test_generation_deterministic_and_versioned(tmp_path):
    a = generate_concept_dataset(str(tmp_path / 'a'), num_train=3, num_val=2, seed=5, size=64)
    generate_concept_dataset(str(tmp_path / 'b'), num_train=3, num_val=2, seed=5, size=64)
    generate_concept_dataset(str(tmp_path / 'c'), num_train=3, num_val=2, seed=6, size=64)
    assert a['generated']
    da, db, dc = (_digest(tmp_path / n) for n in 'abc')
    assert da == db
    assert all(da[k] != dc[k] for k in da if k.startswith('img_dir'))
    meta = json.loads((tmp_path / 'a' / 'meta.json').read_text())
    assert meta['params']['version'] >= 1 and meta['classes'] == list(CONCEPT_SEG_CLASSES)
    assert meta['unseen'] == UNSEEN_NAMES
    # image i does not depend on how many were generated
    img, label = render_concept_sample(5, 'train', 2, 64)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / 'a/img_dir/train/000002.png')), img)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / 'a/ann_dir/train/000002.png')), label)
    assert label.max() < len(CONCEPT_SEG_CLASSES)
    # same parameters: skipped; a changed one: regenerated
    assert not generate_concept_dataset(str(tmp_path / 'a'), num_train=3, num_val=2, seed=5,
                                        size=64)['generated']
    assert generate_concept_dataset(str(tmp_path / 'a'), num_train=4, num_val=2, seed=5,
                                    size=64)['generated']
    with pytest.raises(FileExistsError, match='refusing'):
        (tmp_path / 'foreign').mkdir()
        (tmp_path / 'foreign' / 'x.txt').write_text('x')
        generate_concept_dataset(str(tmp_path / 'foreign'), num_train=1, num_val=1, size=64)


# ------------------------------------------------------------------------ configs
def _seen_unseen_train_images(root, n=40):
    """Generate a small dataset whose train split has unseen-class pixels."""
    generate_concept_dataset(str(root), num_train=n, num_val=2, seed=0, size=128)
    _, unseen = get_zero_shot_split('concepts')
    has = [i for i in range(n) if np.isin(np.asarray(Image.open(
        root / 'ann_dir' / 'train' / f'{i:06d}.png')), unseen).any()]
    assert has, 'no unseen object in the sample'
    return has


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(c) for c in CONFIGS])
@pytest.mark.slow
def test_config_builds_and_train_pipeline_hides_unseen(path, tmp_path):
    from mmseg.registry import DATASETS, MODELS
    cfg = Config.fromfile(path)
    # the tiny CLIP named everywhere; its weights where the run is not a random control
    for tower in ('backbone', 'text_encoder'):
        assert cfg.model[tower].clip_model == 'ovseg-tiny-clip'
        expected = None if 'randclip' in path else 'work_dirs/tiny_clip/ovseg-tiny-clip.pt'
        assert cfg.model[tower].pretrained == expected, (path, tower)
        cfg.model[tower].pretrained = None  # build without the file
    assert cfg.val_evaluator.type == 'ZeroShotIoUMetric' and cfg.val_evaluator.split == \
        'concepts'
    assert all(h.get('type') != 'CheckpointHook' for h in cfg.default_hooks.values())
    model = MODELS.build(cfg.model)
    assert model.vocabulary == list(CONCEPT_SEG_CLASSES)

    # The training pipeline on real generated images: what labels reach the model.
    root = tmp_path / 'concepts'
    with_unseen = _seen_unseen_train_images(root)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = str(root)
    dataset = DATASETS.build(ds_cfg)
    seen, unseen = get_zero_shot_split('concepts')
    fully = 'fully' in path
    transductive = model.__class__.__name__ == 'ZegCLIP' and model.self_training
    hook = [h for h in cfg.get('custom_hooks', []) if h.type == 'ZeroShotVocabularyHook']
    if model.__class__.__name__ == 'ZegCLIP':
        assert not hook
        assert (model.zero_shot_split is None) == fully
    else:
        assert bool(hook) != fully
    for i in with_unseen[:3]:
        gt = dataset[i]['data_samples'].gt_sem_seg.data.numpy()
        values = set(np.unique(gt).tolist()) - {255}
        if fully:
            assert values & set(unseen)  # unseen classes are labelled in the ceiling
        elif transductive:
            assert -1 in values and not values & set(unseen)  # marked for pseudo-labels
        else:
            # inductive: seen labels 0..45 in the seen text order, nothing else
            assert values <= set(range(len(seen))), (path, values)
    # no unseen class survives the mapping anywhere in the (small) training set
    if not fully and not transductive:
        counts = np.zeros(256, np.int64)
        for i in range(len(dataset)):
            gt = dataset[i]['data_samples'].gt_sem_seg.data.numpy().astype(np.int64)
            counts += np.bincount(gt.ravel(), minlength=256)
        assert counts[len(seen):255].sum() == 0


# ------------------------------------------------------------------------ vocabulary hook
def test_zero_shot_vocabulary_hook_switches_names():
    from mmseg.registry import MODELS

    from mmseg_ovseg.engine import ZeroShotVocabularyHook
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'san_tiny_concepts-randclip.py'))
    model = MODELS.build(cfg.model)
    logs = []
    runner = SimpleNamespace(model=model, logger=SimpleNamespace(info=logs.append))
    hook = ZeroShotVocabularyHook('concepts')
    seen, unseen = get_zero_shot_split('concepts')
    hook.before_train(runner)
    assert model.vocabulary == [CONCEPT_SEG_CLASSES[i] for i in seen]
    assert model.decode_head.num_classes == len(seen)
    assert not set(model.vocabulary) & {CONCEPT_SEG_CLASSES[i] for i in unseen}
    hook.before_val_epoch(runner)
    assert model.vocabulary == list(CONCEPT_SEG_CLASSES)
    hook.after_val_epoch(runner)
    assert len(model.vocabulary) == len(seen)  # back to training
    hook.after_train(runner)
    hook.before_val_epoch(runner)
    hook.after_val_epoch(runner)
    assert model.vocabulary == list(CONCEPT_SEG_CLASSES)  # final evaluation keeps all
    # ZegCLIP carries its own split: combining both is refused
    zcfg = Config.fromfile(osp.join(REPO, 'configs', 'zegclip_tiny_concepts-zs-randclip.py'))
    zrunner = SimpleNamespace(model=MODELS.build(zcfg.model), logger=runner.logger)
    with pytest.raises(ValueError, match='own zero_shot_split'):
        ZeroShotVocabularyHook('concepts').before_train(zrunner)


# ------------------------------------------------------------------------ SAN without bias
@pytest.mark.slow
def test_san_mask_pool_recognition_uses_the_masks_as_bias():
    """SANHead(recognition='mask_pool'): the SAN ablation without the attention bias."""
    import torch
    import torch.nn.functional as F
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'san_tiny_concepts-randclip.py'))
    cfg.model.decode_head.recognition = 'mask_pool'
    model = MODELS.build(cfg.model).eval()
    head = model.decode_head
    x = torch.randn(1, 3, 64, 64)
    feats = model.extract_feat(x)
    seen_bias = []
    recognize = model.recognize

    def spy(split_tokens, bias):
        seen_bias.append(bias)
        return recognize(split_tokens, bias)

    model.recognize = spy  # the segmentor calls CLIP's recognition with each pooled bias
    with torch.no_grad():
        all_cls, all_masks = model.decode(feats, deep_supervision=False)
        masks, query_embed = head.mask_decoder(*head.side_adapter(
            x, feats['feats']['clip_feats'], (head.side_adapter.depth, ))[0])
    heads = head.bias_decoder.num_heads
    expected = head.pool_bias(
        F.logsigmoid(masks).unsqueeze(1).expand(-1, heads, -1, -1, -1),
        feats['feats']['clip_hw'])
    torch.testing.assert_close(seen_bias[-1], expected)
    torch.testing.assert_close(all_masks[-1], masks)
    # differs from the learned bias of the paper's recognition
    head.recognition = 'attn_bias'
    with torch.no_grad():
        cls_bias, _ = model.decode(feats, deep_supervision=False)
    assert not torch.allclose(cls_bias[-1], all_cls[-1])
    with pytest.raises(ValueError, match='recognition'):
        cfg.model.decode_head.recognition = 'pool'
        MODELS.build(cfg.model)
