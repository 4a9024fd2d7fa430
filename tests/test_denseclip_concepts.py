"""DenseCLIP on the generated concept benchmark, closed set (configs/denseclip-vit_tiny_concepts*):
the configs build, train one step on generated images with every class labelled, the plain-FPN
variant has no language parts in its graph, and the four rows of the driver's 'denseclip' table
differ only where the table says."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from PIL import Image

import mmseg_ovseg  # noqa: F401  (registers the plugin's modules)
from mmseg_ovseg.clip.vocabularies import get_zero_shot_split
from mmseg_ovseg.datasets.concept_seg import CONCEPT_SEG_CLASSES, generate_concept_dataset
from tool_loader import load_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CLIP = 'work_dirs/tiny_clip/ovseg-tiny-clip.pt'
DENSECLIP = 'denseclip-vit_tiny_concepts.py'
FPN = 'denseclip-vit_tiny_concepts-fpn.py'
CONFIGS = [DENSECLIP, FPN, 'denseclip-vit_tiny_concepts-randclip.py',
           'denseclip-vit_tiny_concepts-fpn-randclip.py']


def _cfg(name):
    return Config.fromfile(osp.join(REPO, 'configs', name))


def _towers(model_cfg):
    return [t for t in ('backbone', 'text_encoder') if t in model_cfg]


def _build(cfg):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    for tower in _towers(cfg.model):
        cfg.model[tower].pretrained = None  # the tests do not need the checkpoint file
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def concept_root(tmp_path_factory):
    """A small generated benchmark whose first train images hold unseen-split objects."""
    root = tmp_path_factory.mktemp('concepts')
    generate_concept_dataset(str(root), num_train=24, num_val=2, seed=0, size=128)
    return root


def _train_batch(cfg, root, n=2):
    """``n`` training samples of the config's own pipeline, preferring unseen-split images."""
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = str(root)
    dataset = DATASETS.build(ds_cfg)
    _, unseen = get_zero_shot_split('concepts')
    has = [i for i in range(len(dataset)) if np.isin(np.asarray(Image.open(
        root / 'ann_dir' / 'train' / f'{i:06d}.png')), unseen).any()]
    assert has, 'no unseen-split object in the sample'
    items = [dataset[i] for i in (has + list(range(len(dataset))))[:n]]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items]), unseen


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_closed_set_on_the_concepts_with_the_tiny_clip(name):
    cfg = _cfg(name)
    towers = _towers(cfg.model)
    assert towers == (['backbone'] if 'fpn' in name else ['backbone', 'text_encoder'])
    for tower in towers:
        assert cfg.model[tower].clip_model == 'ovseg-tiny-clip'
        assert cfg.model[tower].pretrained == (None if 'randclip' in name else TINY_CLIP)
    # closed set: every class labelled, no vocabulary switch
    assert not any(t['type'] == 'ZeroShotLabelMapping'
                   for t in cfg.train_dataloader.dataset.pipeline)
    assert not any(h['type'] == 'ZeroShotVocabularyHook' for h in cfg.get('custom_hooks', []))
    assert cfg.val_evaluator.type == 'ZeroShotIoUMetric'  # its mIoU is over all 55 classes
    assert cfg.train_dataloader.dataset.type == 'ConceptSegDataset'


@pytest.mark.parametrize('name', [DENSECLIP, FPN])
@pytest.mark.slow
def test_config_builds_and_trains_one_step_on_generated_images(name, concept_root):
    cfg = _cfg(name)
    model = _build(cfg)
    model.init_weights()
    data, unseen = _train_batch(cfg, concept_root)
    # closed set: the unseen split's objects reach the model with their own labels
    labels = set(torch.cat([s.gt_sem_seg.data.flatten() for s in data['data_samples']])
                 .unique().tolist()) - {255}
    assert labels & set(unseen) and max(labels) < len(CONCEPT_SEG_CLASSES)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lrs = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    base = cfg.optim_wrapper.optimizer.lr
    params = dict(model.named_parameters())
    # the CLIP image tower is fine-tuned at lr x0.1 in both variants, the rest at the base lr
    assert lrs[id(params['backbone.visual.conv1.weight'])] == pytest.approx(0.1 * base)
    assert lrs[id(params['decode_head.conv_seg.weight'])] == pytest.approx(base)
    before = {n: p.detach().clone() for n, p in params.items()}
    model.train()
    log = model.train_step(data, wrapper)
    assert torch.isfinite(log['loss'])
    expected = {'decode.loss_ce', 'aux_identity.loss_ce'} if name == DENSECLIP \
        else {'decode.loss_ce'}
    assert {k for k in log if 'loss_' in k} == expected
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    for n in ('backbone.visual.transformer.resblocks.3.mlp.c_fc.weight',
              'decode_head.conv_seg.weight'):
        assert n in changed, n
    if name == DENSECLIP:
        assert {'text_encoder.contexts', 'context_decoder.gamma'} <= changed
        assert 'text_encoder.token_embedding.weight' not in changed  # text tower frozen


@pytest.mark.slow
def test_plain_fpn_has_no_language_parts_in_its_graph():
    from mmseg_ovseg.models.decode_heads.identity_head import IdentityHead
    from mmseg_ovseg.models.necks.context_decoder import ContextDecoder
    dense, plain = _build(_cfg(DENSECLIP)), _build(_cfg(FPN))

    def kinds(model):
        return {type(m).__name__ for m in model.modules()}

    # the DenseCLIP model has them (so the checks below can fail) ...
    assert isinstance(dense.context_decoder, ContextDecoder)
    assert isinstance(dense.identity_head, IdentityHead)
    assert dense.neck.lateral_convs[2].conv.in_channels == 64 + len(CONCEPT_SEG_CLASSES)
    # ... the plain FPN has none: no text tower, context decoder, aux head or score-map
    # channels (FPN level 2 sees the 64 CLIP channels only)
    assert type(plain).__name__ == 'EncoderDecoder'
    assert not kinds(plain) & {'ContextDecoder', 'IdentityHead', 'ContextCLIPTextEncoder',
                               'TextTransformer', 'PreModelPrompting'}
    assert not any(n.startswith(('text_encoder', 'context_decoder', 'identity_head'))
                   for n, _ in plain.named_parameters())
    adapter, fpn = plain.neck
    assert type(adapter).__name__ == 'FPNAdapter'
    assert [c.conv.in_channels for c in fpn.lateral_convs] == [64] * 4
    # the backbone returns the stage maps only (no dense / global CLIP embeddings)
    plain.eval()
    with torch.no_grad():
        feats = plain.backbone(torch.zeros(1, 3, 128, 128))
        assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 16)] * 4
        logits = plain.predict(torch.zeros(1, 3, 128, 128))[0].seg_logits.data
    assert logits.shape == (len(CONCEPT_SEG_CLASSES), 128, 128)


def _resolved(name):
    cfg = _cfg(name)
    return cfg, cfg.model.to_dict()


def test_table_rows_differ_only_in_language_parts_and_weights():
    """The driver's 'denseclip' table: same image tower, adapter, FPN widths, head, data,
    optimizer and schedule; DenseCLIP adds the language parts; the controls drop the weights."""
    rows = load_tool('misc/run_open_vocab_ablations').TABLES['denseclip']
    assert [osp.basename(r['config']) for r in rows.values()] == CONFIGS
    assert not any(r.get('options') for r in rows.values())
    (dcfg, dense), (pcfg, plain) = _resolved(DENSECLIP), _resolved(FPN)
    assert plain['backbone'] == dict(dense['backbone'], output_dense=False)
    assert plain['neck'][0] == dense['adapter']
    assert plain['neck'][1] == dict(dense['neck'], in_channels=[64, 64, 64, 64])
    assert plain['decode_head'] == dict(dense['decode_head'],
                                        num_classes=len(CONCEPT_SEG_CLASSES))
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader',
                'val_dataloader', 'val_evaluator', 'randomness'):
        assert pcfg[key] == dcfg[key], key
    for name, base in ((CONFIGS[2], dense), (CONFIGS[3], plain)):
        control = _resolved(name)[1]
        for tower in _towers(control):
            assert control[tower] == dict(base[tower], pretrained=None), (name, tower)
        assert {k: v for k, v in control.items() if k not in ('backbone', 'text_encoder')} \
            == {k: v for k, v in base.items() if k not in ('backbone', 'text_encoder')}
