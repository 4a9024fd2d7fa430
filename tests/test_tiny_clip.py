"""The in-package tiny CLIP: model, pretraining, region loss, checkpoint loading (concept
rendering and caption data: test_tiny_clip_concepts.py)."""

import numpy as np
import open_clip
import pytest
import torch

import mmseg_ovseg  # noqa: F401  (registers 'ovseg-tiny-clip' with open_clip)
from mmseg_ovseg.clip import OVCLIPTextEncoder
from mmseg_ovseg.clip.region_losses import dense_region_loss, patch_cover
from mmseg_ovseg.clip.tiny import (
    PLAIN_CHECKPOINT,
    PRETRAIN_DEFAULTS,
    PRETRAIN_PRESETS,
    TINY_CLIP_NAME,
    ZERO_SHOT_TEMPLATE,
    build_clip,
)
from mmseg_ovseg.clip.tiny_pretrain import param_groups, pretrain, state_path_for, train_step
from mmseg_ovseg.datasets.captions import CaptionGenerator, to_tensor
from mmseg_ovseg.datasets.concepts import (
    CONCEPT_CLASSES,
)
from mmseg_ovseg.models.backbones.clip_vit import CLIPVisionTransformer


def initialized(module):
    """``module`` after ``init_weights()``: CLIP towers read ``pretrained`` there
    (mmengine's convention), not at construction."""
    module.init_weights()
    return module


# ------------------------------------------------------------------------------ model
def test_tiny_clip_registered():
    cfg = open_clip.get_model_config(TINY_CLIP_NAME)
    assert cfg is not None and not cfg.get('quick_gelu', False)
    model = build_clip()
    ref = open_clip.create_model(TINY_CLIP_NAME)
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.slow
def test_one_step_lowers_loss_on_fixed_batch():
    from open_clip.loss import ClipLoss
    torch.manual_seed(0)
    model = build_clip(seed=0)
    gen = CaptionGenerator(seed=0)
    samples = [gen.sample(i) for i in range(16)]
    images = torch.stack([to_tensor(s[0]) for s in samples])
    tokens = open_clip.get_tokenizer(TINY_CLIP_NAME)([s[1] for s in samples])
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    loss_fn = ClipLoss()
    before = train_step(model, opt, loss_fn, images, tokens)
    with torch.no_grad():
        a, b, s = model(images, tokens)
        after = float(loss_fn(a, b, s))
    assert np.isfinite(before) and after < before - 1e-3, (before, after)


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('tiny_clip') / 'tiny.pt')
    result = pretrain(out=out, steps=3, batch_size=8, warmup=1, eval_per_class=1,
                      save_every=1, threads=1, progress=False, log=lambda s: None)
    return out, result


def test_pretrain_writes_plain_open_clip_state_dict(tiny_checkpoint):
    out, result = tiny_checkpoint
    state = torch.load(out, map_location='cpu', weights_only=True)
    ref = open_clip.create_model(TINY_CLIP_NAME).state_dict()
    assert set(state) == set(ref)
    assert all(state[k].shape == ref[k].shape for k in ref)
    model = open_clip.create_model(TINY_CLIP_NAME)
    model.load_state_dict(state, strict=True)
    zs = result['zero_shot']
    assert zs['num_images'] == len(CONCEPT_CLASSES) - 1
    assert 0 <= zs['top1'] <= 100 and result['cpu_s'] > 0


def test_checkpoint_loads_into_both_towers(tiny_checkpoint):
    out, _ = tiny_checkpoint
    state = torch.load(out, map_location='cpu', weights_only=True)
    vis = initialized(CLIPVisionTransformer(TINY_CLIP_NAME, pretrained=out))
    for k, v in vis.visual.state_dict().items():
        assert torch.equal(v, state['visual.' + k]), k
    text = initialized(OVCLIPTextEncoder(TINY_CLIP_NAME, pretrained=out, templates='single'))
    assert torch.equal(text.token_embedding.weight, state['token_embedding.weight'])
    assert torch.equal(text.text_projection, state['text_projection'])
    # A checkpoint of another architecture is refused with the key names.
    bad = dict(state)
    bad.pop('visual.ln_post.weight')
    torch.save(bad, out + '.bad')
    with pytest.raises(ValueError, match='ln_post'):
        initialized(CLIPVisionTransformer(TINY_CLIP_NAME, pretrained=out + '.bad'))


@pytest.mark.slow
def test_pretrain_resume_is_exact(tmp_path, tiny_checkpoint):
    ref_out, _ = tiny_checkpoint
    out = str(tmp_path / 'resumed.pt')
    kwargs = dict(steps=3, batch_size=8, warmup=1, eval_per_class=1, save_every=1, threads=1,
                  progress=False, log=lambda s: None)
    first = pretrain(out=out, stop_after=2, **kwargs)
    assert first['checkpoint'] is None and first['steps'] == 2
    assert torch.load(state_path_for(out), weights_only=False)['step'] == 2
    pretrain(out=out, resume=True, **kwargs)
    a = torch.load(ref_out, weights_only=True)
    b = torch.load(out, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match='other settings'):
        pretrain(out=out, resume=True, **dict(kwargs, lr=1e-4))


# ------------------------------------------------------------------------------ region loss
def test_sample_with_label_is_the_same_sample():
    gen = CaptionGenerator(seed=3)
    for i in range(6):
        plain = gen.sample(i)
        image, caption, classes, boxes, label = gen.sample(i, return_label=True)
        assert np.array_equal(image, plain[0]) and caption == plain[1]
        assert classes == plain[2] and boxes == plain[3]
        assert label.shape == image.shape[:2]
        # every drawn class is in the label map (unless fully occluded) and nothing else is
        assert set(np.unique(label)) - {0} <= set(classes)
        assert (set(np.unique(label)) - {0})


def test_patch_cover():
    labels = np.zeros((2, 8, 16), np.uint8)  # patch 4: a 2 x 4 grid
    labels[0, :4, :4] = 3  # patch 0 of image 0 fully class 3
    labels[0, 4:6, 4:8] = 1  # half of patch 5
    labels[1, :, 12:] = 2  # column 3 of image 1
    cover = patch_cover(labels, 4, 4)
    assert cover.shape == (2, 4, 8)
    assert torch.allclose(cover.sum(1), torch.ones(2, 8))
    assert cover[0, 3, 0] == 1 and cover[0, 1, 5] == 0.5 and cover[0, 0, 5] == 0.5
    assert cover[1, 2, 3] == 1 and cover[1, 2, 7] == 1 and cover[1, 2].sum() == 2
    with pytest.raises(ValueError, match='multiple of the patch size'):
        patch_cover(labels[:, :7], 4, 4)
    with pytest.raises(ValueError, match='labels must be in'):
        patch_cover(labels, 4, 3)


def test_dense_region_loss_targets():
    """Embeddings equal to their object's text embedding give a lower loss than permuted
    ones; background-only patches do not count."""
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    cover = torch.zeros(1, 4, 4)
    cover[0, 0, 3] = 1  # patch 3: background
    for p, c in enumerate((1, 2, 3)):
        cover[0, c, p] = 1
    right = text[[0, 1, 2, 0]][None]
    wrong = text[[1, 2, 0, 0]][None]
    scale = torch.tensor(20.0)
    good, bad = dense_region_loss(right, cover, text, scale), dense_region_loss(
        wrong, cover, text, scale)
    assert good < 0.01 < 10 < bad
    # the background patch's embedding does not matter
    moved = right.clone()
    moved[0, 3] = text[2]
    assert torch.allclose(dense_region_loss(moved, cover, text, scale), good)
    assert float(dense_region_loss(right, torch.zeros(1, 4, 4), text, scale)) == 0
    with pytest.raises(ValueError, match='object classes'):
        dense_region_loss(right, cover[:, :3], text, scale)


@pytest.mark.slow
def test_dense_step_lowers_region_loss():
    from open_clip.loss import ClipLoss
    model = build_clip(seed=0)
    gen = CaptionGenerator(seed=0)
    samples = [gen.sample(i, return_label=True) for i in range(16)]
    images = torch.stack([to_tensor(s[0]) for s in samples])
    tok = open_clip.get_tokenizer(TINY_CLIP_NAME)
    tokens = tok([s[1] for s in samples])
    class_tokens = tok([ZERO_SHOT_TEMPLATE.format(n) for n in CONCEPT_CLASSES[1:]])
    cover = patch_cover(np.stack([s[4] for s in samples]), 8, len(CONCEPT_CLASSES))

    def region_loss():
        with torch.no_grad():
            model.visual.output_tokens = True
            _, patches = model.visual(images)
            model.visual.output_tokens = False
            emb = torch.nn.functional.normalize(patches @ model.visual.proj, dim=-1)
            text = torch.nn.functional.normalize(model.encode_text(class_tokens), dim=-1)
            return float(dense_region_loss(emb, cover, text, model.logit_scale.exp()))

    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=2e-3)
    before = region_loss()
    for _ in range(3):
        train_step(model, opt, ClipLoss(), images, tokens, cover=cover,
                   class_tokens=class_tokens, dense_weight=1.0)
    assert region_loss() < before - 0.05, (before, region_loss())
    assert model.visual.output_tokens is False


@pytest.mark.slow
def test_pretrain_presets_and_region_resume_guard(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('pretrain_clip', 'tools/pretrain_clip.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    # the default preset is the demo recipe: region terms from scratch, unseen left out
    demo = tool.parse_args([])
    assert demo.preset == 'demo' and demo.init is None and demo.region_start == 0
    assert demo.steps == PRETRAIN_PRESETS['demo']['steps'] < PRETRAIN_DEFAULTS['steps']
    assert demo.dense_weight > 0 and demo.sls_weight > 0 and demo.region_exclude == 'concepts'
    # the earlier demo recipe stays reachable: plain CLIP, 1,200 steps
    plain = tool.parse_args(['--preset', 'plain'])
    assert plain.steps == PRETRAIN_DEFAULTS['steps'] == 1200
    assert plain.dense_weight == plain.sls_weight == 0 and plain.region_exclude is None
    region = tool.parse_args(['--preset', 'region', '--steps', '7'])
    assert region.steps == 7 and region.dense_weight > 0 and region.init == PLAIN_CHECKPOINT
    out = str(tmp_path / 'r.pt')
    kwargs = dict(steps=2, batch_size=4, warmup=1, eval_per_class=1, save_every=1, threads=1,
                  progress=False, log=lambda s: None)
    first = pretrain(out=out, stop_after=1, dense_weight=1.0, **kwargs)
    assert first['steps'] == 1
    with pytest.raises(ValueError, match='dense_weight'):
        pretrain(out=out, resume=True, **kwargs)
    assert pretrain(out=out, resume=True, dense_weight=1.0, **kwargs)['steps'] == 2


@pytest.mark.slow
def test_region_start_switches_the_region_terms_on_mid_schedule(tmp_path, monkeypatch):
    """``region_start`` = fraction of the schedule run as plain CLIP steps: the region terms
    (the label maps' coverage) reach ``train_step`` from that step on; a state written with
    another ``region_start`` is not resumed; a fraction outside [0, 1) is refused."""
    from mmseg_ovseg.clip import tiny_pretrain
    calls = []
    real_step = tiny_pretrain.train_step

    def spy(*args, **kwargs):
        calls.append('cover' in kwargs)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tiny_pretrain, 'train_step', spy)
    out = str(tmp_path / 'rs.pt')
    kwargs = dict(steps=4, batch_size=4, warmup=1, eval_per_class=1, save_every=1, threads=1,
                  progress=False, log=lambda s: None, dense_weight=1.0, sls_weight=1.0,
                  region_exclude='concepts')
    pretrain(out=out, stop_after=3, region_start=0.5, **kwargs)
    assert calls == [False, False, True]
    with pytest.raises(ValueError, match='region_start'):
        pretrain(out=out, resume=True, region_start=0.25, **kwargs)
    with pytest.raises(ValueError, match='fraction'):
        pretrain(out=str(tmp_path / 'x.pt'), region_start=1.0, **kwargs)


def test_ensure_tiny_clip_pretrains_the_demo_preset_once(tmp_path, monkeypatch):
    """A missing checkpoint is pretrained with the 'demo' preset (caller's settings on top,
    resuming a partial run); an existing one is returned without pretraining."""
    from mmseg_ovseg.clip import tiny, tiny_pretrain
    calls = []

    def fake_pretrain(out, **kwargs):
        calls.append(kwargs)
        torch.save({}, out)

    monkeypatch.setattr(tiny_pretrain, 'pretrain', fake_pretrain)
    path = str(tmp_path / 'clip.pt')
    assert tiny.ensure_tiny_clip(path, threads=1, steps=5) == path
    assert calls == [dict(PRETRAIN_PRESETS['demo'], resume=True, threads=1, steps=5)]
    assert calls[0]['dense_weight'] > 0 and calls[0]['region_exclude'] == 'concepts'
    with pytest.warns(UserWarning, match='recipe is unknown'):  # the fake wrote no recipe
        assert tiny.ensure_tiny_clip(path) == path and len(calls) == 1


def test_presets_have_their_own_cache_path_and_pretrain_with_their_recipe(tmp_path,
                                                                         monkeypatch):
    """Each preset is cached at its own path ('demo' at the default one, 'plain' at
    PLAIN_CHECKPOINT, which the continuation presets start from) and ensure_tiny_clip
    pretrains a missing checkpoint with the preset asked for."""
    from mmseg_ovseg.clip import tiny, tiny_pretrain
    assert tiny.checkpoint_for_preset('demo') == tiny.DEFAULT_CHECKPOINT
    assert tiny.checkpoint_for_preset('plain') == PLAIN_CHECKPOINT
    paths = {tiny.checkpoint_for_preset(p) for p in PRETRAIN_PRESETS}
    assert len(paths) == len(PRETRAIN_PRESETS)
    assert tiny.checkpoint_for_preset('demo-2400').endswith('ovseg-tiny-clip-demo-2400.pt')
    # the longer demo recipe differs from 'demo' in its length only
    assert PRETRAIN_PRESETS['demo-2400'] == dict(PRETRAIN_PRESETS['demo'], steps=2400)
    with pytest.raises(KeyError, match="'demo2400'.*known"):
        tiny.checkpoint_for_preset('demo2400')
    calls = []
    monkeypatch.setattr(tiny_pretrain, 'pretrain',
                        lambda out, **kw: calls.append(kw) or torch.save({}, out))
    path = str(tmp_path / 'long.pt')
    assert tiny.ensure_tiny_clip(path, preset='demo-2400', threads=1) == path
    assert calls == [dict(PRETRAIN_PRESETS['demo-2400'], resume=True, threads=1)]
    with pytest.raises(KeyError, match='unknown tiny CLIP preset'):
        tiny.ensure_tiny_clip(str(tmp_path / 'x.pt'), preset='nope')
    # tools/pretrain_clip.py writes a preset to its cache path unless --out says otherwise
    import importlib.util
    spec = importlib.util.spec_from_file_location('pretrain_clip', 'tools/pretrain_clip.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.parse_args([]).out == tiny.DEFAULT_CHECKPOINT
    assert tool.parse_args(['--preset', 'demo-2400']).out == tiny.checkpoint_for_preset(
        'demo-2400')
    assert tool.parse_args(['--preset', 'demo-2400', '--out', 'x.pt']).out == 'x.pt'


def test_read_logit_scale_is_the_models_temperature(tiny_checkpoint, tmp_path):
    """read_logit_scale gives what open_clip's model holds after loading the checkpoint (the
    value SAN's logit_scale takes), and names a file that is no CLIP state dict."""
    from mmseg_ovseg.clip.tiny import read_logit_scale
    out, _ = tiny_checkpoint
    model = open_clip.create_model(TINY_CLIP_NAME)
    model.load_state_dict(torch.load(out, map_location='cpu', weights_only=True))
    assert read_logit_scale(out) == pytest.approx(model.logit_scale.item(), abs=1e-7)
    # 3 steps moved it from open_clip's initial ln(1 / 0.07)
    assert read_logit_scale(out) != pytest.approx(np.log(1 / 0.07), abs=1e-6)
    other = tmp_path / 'other.pt'
    torch.save({'weight': torch.zeros(1)}, other)
    with pytest.raises(KeyError, match=f'{other}: no logit_scale'):
        read_logit_scale(str(other))


def test_cached_checkpoint_of_another_recipe_is_named(tiny_checkpoint, tmp_path):
    """pretrain records its recipe next to the checkpoint; ensure_tiny_clip reuses a cached
    checkpoint silently when its recipe is the one asked for, and otherwise warns naming the
    setting (or that the recipe is unknown); a checkpoint from before recipes were recorded
    is read from its training state."""
    import json
    import shutil
    import warnings

    from mmseg_ovseg.clip import tiny
    from mmseg_ovseg.clip.tiny_pretrain import read_recipe, recipe_path_for, state_path_for
    out, _ = tiny_checkpoint
    with open(recipe_path_for(out)) as f:
        recipe = json.load(f)
    assert recipe == read_recipe(out)
    assert (recipe['steps'], recipe['batch_size'], recipe['warmup']) == (3, 8, 1)
    assert recipe['lr'] == PRETRAIN_DEFAULTS['lr'] and recipe['dense_weight'] == 0
    same = dict(steps=3, batch_size=8, warmup=1, lr=PRETRAIN_DEFAULTS['lr'], dense_weight=0.0,
                sls_weight=0.0, region_exclude=None, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert tiny.ensure_tiny_clip(out, **same) == out
    with pytest.raises(UserWarning, match=r"lr=0\.002 \(now 0\.003\)"):
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            tiny.ensure_tiny_clip(out, **dict(same, lr=3e-3))
    old = str(tmp_path / 'old.pt')  # cached before recipes were recorded: training state only
    shutil.copy(out, old)
    shutil.copy(state_path_for(out), state_path_for(old))
    assert read_recipe(old) == recipe
    bare = str(tmp_path / 'bare.pt')  # no recipe, no state
    shutil.copy(out, bare)
    assert read_recipe(bare) is None
    with pytest.warns(UserWarning, match='recipe is unknown'):
        assert tiny.ensure_tiny_clip(bare, **same) == bare


@pytest.mark.slow
def test_pretrain_init_from_checkpoint(tmp_path, tiny_checkpoint):
    """``init`` starts from a checkpoint: with lr 0 (AdamW's decay is scaled by the lr) the
    written weights are the initial ones; a random start differs."""
    ref_out, _ = tiny_checkpoint
    kwargs = dict(steps=1, batch_size=4, warmup=1, eval_per_class=1, threads=1, lr=0.0,
                  progress=False, log=lambda s: None)
    out = str(tmp_path / 'cont.pt')
    pretrain(out=out, init=ref_out, **kwargs)
    a = torch.load(ref_out, weights_only=True)
    b = torch.load(out, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    pretrain(out=str(tmp_path / 'scratch.pt'), seed=5, **kwargs)
    c = torch.load(str(tmp_path / 'scratch.pt'), weights_only=True)
    assert not torch.equal(a['visual.proj'], c['visual.proj'])
    with pytest.raises(FileNotFoundError, match='init checkpoint'):
        pretrain(out=out, init=str(tmp_path / 'missing.pt'), **kwargs)


@pytest.mark.slow
def test_probe_tool_counts(tmp_path, tiny_checkpoint):
    """tools/misc/probe_tiny_clip.py on a 3-image benchmark: one crop / region per object
    class present, one patch per patch that an object covers >= 50 %."""
    import importlib.util

    from PIL import Image

    from mmseg_ovseg.datasets.concept_seg import generate_concept_dataset
    spec = importlib.util.spec_from_file_location('probe', 'tools/misc/probe_tiny_clip.py')
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    root = str(tmp_path / 'concepts')
    generate_concept_dataset(root, num_train=1, num_val=3, size=64)
    model = probe.load_clip(tiny_checkpoint[0], TINY_CLIP_NAME)
    res = probe.region_probe(model, open_clip.get_tokenizer(TINY_CLIP_NAME), root, 3, 1)
    from mmseg_ovseg.clip.vocabularies import get_zero_shot_split
    _, unseen = get_zero_shot_split('concepts', 55)
    objects = patches = unseen_objects = 0
    for i in range(3):
        ann = np.asarray(Image.open(f'{root}/ann_dir/val/{i:06d}.png'))
        objects += len(set(np.unique(ann)) - {0})
        unseen_objects += len(set(np.unique(ann)) & set(unseen))
        cover = patch_cover(ann[None], 8, 55)[0, 1:]
        patches += int((cover.max(0).values >= 0.5).sum())
    assert res['crop_tight']['num'] == res['crop_context']['num'] == objects > 0
    assert res['region_pool']['num'] == objects and res['patch']['num'] == patches > 0
    assert res['sls_mask']['num'] == objects
    assert res['sls_mask_unseen']['num'] == res['crop_tight_unseen']['num'] == unseen_objects
    assert all(0 <= r['top1'] <= 100 for r in res.values())
    with pytest.raises(ValueError, match='--num-val'):
        probe.region_probe(model, open_clip.get_tokenizer(TINY_CLIP_NAME), root, 4, 1)


def test_create_clip_names_the_keys_that_do_not_fit(tmp_path):
    """``create_clip(model, pretrained)`` loads a plain open_clip state dict strictly and, for
    a checkpoint of another layout, lists the missing and mis-shaped keys."""
    import open_clip

    from mmseg_ovseg.clip.builder import create_clip
    torch.manual_seed(0)
    state = open_clip.create_model('ovseg-tiny-clip').state_dict()
    good = tmp_path / 'good.pt'
    torch.save(state, good)
    clip = create_clip('ovseg-tiny-clip', str(good))
    assert torch.equal(clip.state_dict()['visual.proj'], state['visual.proj'])
    bad = dict(state)
    del bad['ln_final.weight']
    bad['visual.proj'] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match='bad.pt') as err:
        create_clip('ovseg-tiny-clip', str(tmp_path / 'bad.pt'))
    assert 'ln_final.weight' in str(err.value) and 'visual.proj' in str(err.value)
    assert '(3, 3)' in str(err.value)
