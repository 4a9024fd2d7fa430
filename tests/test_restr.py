"""ReSTR (Kim et al., CVPR 2022): vocabulary/tokeniser, language encoder, padding masks,
segmentor, configs and a tiny Runner training (fusion/decoder shapes, loss and masked block:
test_restr_modules.py)."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_ovseg.datasets import generate_referring_dataset
from mmseg_ovseg.models.decode_heads.restr_fusion import ReSTRFusionEncoder
from mmseg_ovseg.models.language import (
    PAD_ID,
    UNK_ID,
    ReSTRLanguageEncoder,
    WordVocabulary,
    build_vocab_from_refs,
    load_glove_vectors,
    split_words,
)
from tool_loader import load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
WORDS = ['the', 'red', 'circle', 'on', 'left', 'green', 'square', 'right', "'", 's']


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / 'vocab.txt'
    path.write_text('\n'.join(WORDS) + '\n')
    return str(path)


def _lang(vocab_file, **kw):
    cfg = dict(embed_dims=16, out_dims=24, num_layers=2, num_heads=2, max_len=8)
    cfg.update(kw)
    return ReSTRLanguageEncoder(vocab_file, **cfg)


# ---------------------------------------------------------------- vocabulary / tokeniser
def test_split_words_and_encode(vocab_file):
    assert split_words("The man's Red-hat .") == ['the', 'man', "'", 's', 'red', '-', 'hat']
    assert split_words('red circle.') == ['red', 'circle']
    vocab = WordVocabulary.from_file(vocab_file)
    assert len(vocab) == len(WORDS) + 2 and vocab.word_to_id('the') == 2
    assert vocab.word_to_id('banana') == UNK_ID and vocab.id_to_word(PAD_ID) == '<pad>'
    ids, valid = vocab.encode(['The red banana', 'the red circle on the left of the square',
                               '.'], max_len=6)
    assert ids.tolist() == [[2, 3, UNK_ID, 0, 0, 0], [2, 3, 4, 5, 2, 6],  # truncated to 6
                            [UNK_ID, 0, 0, 0, 0, 0]]  # no word -> one <unk>, never all-pad
    assert valid.tolist() == [[True] * 3 + [False] * 3, [True] * 6, [True] + [False] * 5]


@pytest.mark.parametrize('text,match', [
    ('', 'empty vocabulary'),
    ('red\n\nblue\n', 'line 2: empty word'),
    ('red\nblue\nred\n', "line 3: duplicate word 'red'"),
    ('red car\n', 'whitespace'),
    ('<unk>\nred\n', 'reserved'),
])
def test_vocab_file_errors(tmp_path, text, match):
    path = tmp_path / 'v.txt'
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        WordVocabulary.from_file(str(path))
    assert str(path) in str(e.value)
    with pytest.raises(FileNotFoundError, match='build_word_vocab'):
        WordVocabulary.from_file(str(tmp_path / 'missing.txt'))
    (tmp_path / 'empty.txt').write_text('\n')
    with pytest.raises(ValueError, match='empty vocabulary'):
        ReSTRLanguageEncoder(str(tmp_path / 'empty.txt'))


def test_build_vocab_from_refs_and_tool(tmp_path, capsys):
    generate_referring_dataset(str(tmp_path / 'd'), splits=dict(train=3, val=1), seed=1)
    refs = str(tmp_path / 'd' / 'refsyn' / 'refs(unc).p')
    vocab = build_vocab_from_refs(refs, str(tmp_path / 'v.txt'))
    # every ref has "the <colour> <shape>" and "<colour> <shape> on the <side>"
    assert vocab.words[0] == 'the' and {'on', 'left', 'right'} <= set(vocab.words)
    assert WordVocabulary.from_file(str(tmp_path / 'v.txt')).words == vocab.words
    only_train = build_vocab_from_refs(refs, splits=['train'])
    assert set(only_train.words) <= set(vocab.words)
    tool = load_tool('dataset_converters/build_word_vocab')
    assert tool.main([refs, '--out', str(tmp_path / 'o' / 'v.txt')]) == 0
    assert (tmp_path / 'o' / 'v.txt').read_text().split() == vocab.words
    assert tool.main([str(tmp_path / 'nope.p'), '--out', str(tmp_path / 'x.txt')]) == 1
    assert 'error:' in capsys.readouterr().err


def test_glove_vectors(tmp_path, vocab_file):
    vocab = WordVocabulary.from_file(vocab_file)
    glove = tmp_path / 'glove.txt'
    glove.write_text('3 4\nred 1 2 3 4\nbanana 9 9 9 9\n. . 7 7 7 7\n'
                     'the 0.5 -0.5 0.25 -0.25\n')  # header, a spaced "word" skipped
    weight, found = load_glove_vectors(str(glove), vocab, 4)
    assert found == 2
    assert weight[vocab.word_to_id('red')].tolist() == [1, 2, 3, 4]
    assert weight[vocab.word_to_id('the')].tolist() == [0.5, -0.5, 0.25, -0.25]
    assert weight[vocab.word_to_id('circle')].abs().sum() == 0
    enc = _lang(vocab_file, embed_dims=4, glove_file=str(glove))
    assert enc.glove_found == 2 and enc.embedding.weight[PAD_ID].abs().sum() == 0
    assert enc.embedding.weight[vocab.word_to_id('red')].tolist() == [1, 2, 3, 4]
    assert enc.embedding.weight[vocab.word_to_id('circle')].abs().sum() > 0  # random init kept
    glove.write_text('red 1 2 3 4\nthe 1 2 3\n')
    with pytest.raises(ValueError, match=r'line 2 \(\'the\'\) has 3 values, expected 4'):
        load_glove_vectors(str(glove), vocab, 4)
    glove.write_text('red 1 2 3 4 5\n')
    with pytest.raises(ValueError, match=r'line 1 \(\'red\'\) has 5 values, expected 4'):
        load_glove_vectors(str(glove), vocab, 4)
    glove.write_text('red 1 2 x 4\n')
    with pytest.raises(ValueError, match='line 1'):
        load_glove_vectors(str(glove), vocab, 4)


# ---------------------------------------------------------------- padding masks
def test_language_encoder_ignores_padding(vocab_file):
    enc = _lang(vocab_file).eval()
    sents = ['the red circle', 'green square on the right']
    with torch.no_grad():
        out, valid = enc(sents)
        assert out.shape == (2, 8, 24) and valid.sum(1).tolist() == [3, 5]
        assert out[~valid].abs().sum() == 0
        enc.embedding.weight[PAD_ID].normal_(0, 3)  # what padded words carry into attention
        out2, _ = enc(sents)
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r'\(B, 8\)'):
        enc.forward_ids(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool))


def _fusion(mask_padding=True):
    return ReSTRFusionEncoder(visual_dims=12, language_dims=10, embed_dims=16, num_layers=2,
                              num_heads=2, drop_path_rate=0.0, mask_padding=mask_padding).eval()


@pytest.mark.slow
def test_fusion_ignores_padding_and_official_bug_would_not():
    fusion = _fusion()
    x_v = torch.randn(2, 12, 3, 4)
    x_l = torch.randn(2, 5, 10)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    # more padding, with garbage in the padded rows
    x_l2 = torch.cat([x_l, torch.randn(2, 4, 10)], dim=1)
    x_l2[0, 3:5] = torch.randn(2, 10)
    valid2 = torch.cat([valid, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a, b = fusion(x_v, x_l, valid), fusion(x_v, x_l2, valid2)
        for key in ('patch_logits', 'patches', 'classifier', 'visual'):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)
        unmasked = _fusion(mask_padding=False)
        unmasked.load_state_dict(fusion.state_dict())
        c, d = unmasked(x_v, x_l, valid), unmasked(x_v, x_l2, valid2)
    assert (c['patch_logits'] - d['patch_logits']).abs().max() > 1e-4  # the reference's bug


# ---------------------------------------------------------------- segmentor
def _tiny_cfg(vocab_file):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'restr_tiny_synthetic.py'))
    cfg.model.language_encoder.vocab_file = vocab_file
    return cfg


def _samples(n, h, w, sentences=None, ori=None):
    sentences = sentences or ['the red circle', 'green square on the right'] * n
    out = []
    for i in range(n):
        s = SegDataSample(metainfo=dict(sentence=sentences[i], img_shape=(h, w),
                                        pad_shape=(h, w), ori_shape=ori or (h, w)))
        gt = torch.zeros(1, h, w, dtype=torch.long)
        gt[:, h // 4:h // 2, w // 4:w // 2 + i * 4] = 1
        s.gt_sem_seg = PixelData(data=gt)
        out.append(s)
    return out


@pytest.mark.slow
def test_gradients_reach_every_trainable_parameter(vocab_file):
    model = MODELS.build(_tiny_cfg(vocab_file).model)
    model.init_weights()
    model.train()
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)] * 2,
                data_samples=_samples(2, 64, 64))
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert set(losses) == {'loss_pixel', 'loss_patch'}
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert no_grad == []
    for name in ('backbone', 'language_encoder', 'fusion', 'decoder'):
        assert any(p.requires_grad for p in getattr(model, name).parameters())
    assert model.language_encoder.embedding.weight.grad[PAD_ID].abs().sum() == 0


@pytest.mark.slow
def test_predict_letterboxed_input_and_errors(vocab_file):
    model = MODELS.build(_tiny_cfg(vocab_file).model).eval()
    # a 50x40 image resized (keep ratio) to 64x51, padded to 64x64 by the preprocessor
    samples = _samples(2, 64, 51, ori=(50, 40))
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 51), dtype=torch.uint8)] * 2,
                data_samples=samples)
    data = model.data_preprocessor(data, False)
    assert data['inputs'].shape == (2, 3, 64, 64)
    assert tuple(data['data_samples'][0].metainfo['img_padding_size']) == (0, 13, 0, 0)
    with torch.no_grad():
        z = model._forward(data['inputs'], data['data_samples'])
        out = model.predict(data['inputs'], data['data_samples'])
    assert z.shape == (2, 1, 64, 64)
    with torch.no_grad():  # the decoder sees concat[x_v, patch_logit * patches] (Sec. 3.3)
        x_l, valid = model.language_encoder(['the red circle', 'green square on the right'])
        fused = model.fusion(model.extract_feat(data['inputs']), x_l, valid)
        manual = model.decoder(torch.cat(
            [fused['visual'], fused['patch_logits'] * fused['patches']], dim=1))
    torch.testing.assert_close(z, manual)
    for i, s in enumerate(out):
        logits = s.seg_logits.data
        assert logits.shape == (2, 50, 40) and s.pred_sem_seg.data.shape == (1, 50, 40)
        assert logits[0].abs().sum() == 0  # background logit 0: argmax = (object logit > 0)
        assert torch.equal(s.pred_sem_seg.data[0].bool(), logits[1] > 0)
        # the padding (columns 51..63) is cropped before resizing to the original size
        ref = F.interpolate(z[i:i + 1, :, :, :51], size=(50, 40), mode='bilinear',
                            align_corners=False)[0, 0]
        torch.testing.assert_close(logits[1], ref)
    # different sentences, different predictions for the same image
    assert not torch.equal(out[0].seg_logits.data, out[1].seg_logits.data)
    bad = _samples(1, 64, 64)
    del bad[0].sentence
    with pytest.raises(KeyError, match='PackReferringInputs'):
        model.predict(torch.zeros(1, 3, 64, 64), bad)
    with pytest.raises(ValueError, match='empty or non-string'):
        model.predict(torch.zeros(1, 3, 64, 64), _samples(1, 64, 64, sentences=['  ']))
    with pytest.raises(ValueError, match='one data sample'):
        model.predict(torch.zeros(2, 3, 64, 64), _samples(1, 64, 64))
    cfg = _tiny_cfg(vocab_file)
    cfg.model.decoder.in_channels = 64
    with pytest.raises(ValueError, match='2 x fusion.embed_dims'):
        MODELS.build(cfg.model)


@pytest.mark.slow
def test_480_config_builds_with_derived_parameter_count(tmp_path):
    vocab = tmp_path / 'vocab.txt'
    num_words = 50
    vocab.write_text('\n'.join(f'w{i}' for i in range(num_words)) + '\n')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'restr_vit-b16_refcoco-480x480.py'))
    cfg.model.language_encoder.vocab_file = str(vocab)
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'  # not loaded: no init_weights()
    model = MODELS.build(cfg.model)
    d, L = 768, 300

    def block(c, ffn):  # 2 LayerNorms, qkv, out proj, FFN
        return 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * ffn + ffn) + (ffn * c + c)

    vit = (3 * 16 * 16 * d + d) + d + (30 * 30 + 1) * d + 12 * block(d, 4 * d) + 2 * d
    lang = (num_words + 2) * L + 6 * block(L, 4 * L) + (L * d + d) + 2 * d
    fusion = 2 * (d * d + d) + d + 2 * d * d + 4 * block(d, 4 * d) + 2 * d
    decoder = 1536 * 768 + 768 * 384 + 384 * 192 + 192 * 96 + 96
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(model.backbone), count(model.language_encoder), count(model.fusion),
            count(model.decoder)) == (vit, lang, fusion, decoder)
    assert (vit, fusion, decoder) == (86339328, 30714624, 1566816)
    assert count(model) == 125356872 + 300 * (num_words + 2) == 125372472
    assert model.backbone.pos_embed.shape == (1, 901, 768)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['backbone'].lr_mult == 0.1
    assert cfg.optim_wrapper.optimizer.lr == 1e-5 and cfg.train_dataloader.batch_size == 8
    assert cfg.param_scheduler[0].end == cfg.max_iters // 10
    _assert_official_layer_norms(model, num_vit=2 * 12 + 1, num_lang=2 * 6 + 1,
                                 num_fusion=2 * 4 + 1)


def _assert_official_layer_norms(model, num_vit, num_lang, num_fusion):
    """Every LayerNorm of official ReSTR is ``nn.LayerNorm(dim)``: eps 1e-5 (its ViT blocks and
    final norm, LangBlock, lang_norm, the fusion blocks and norm; model/vit.py,
    model/transformers/blocks.py, model/glove_transformer.py, model/fusion_module.py)."""
    for part, num in (('backbone', num_vit), ('language_encoder', num_lang),
                      ('fusion', num_fusion)):
        norms = [(n, m) for n, m in getattr(model, part).named_modules()
                 if isinstance(m, torch.nn.LayerNorm)]
        assert len(norms) == num, (part, len(norms))
        bad = [(n, m.eps) for n, m in norms if m.eps != 1e-5]
        assert not bad, (part, bad)


def test_tiny_config_layer_norms_are_official(vocab_file):
    model = MODELS.build(_tiny_cfg(vocab_file).model)
    _assert_official_layer_norms(model, num_vit=2 * 4 + 1, num_lang=2 * 2 + 1,
                                 num_fusion=2 * 4 + 1)


@pytest.mark.slow
def test_tiny_config_trains_two_iterations_with_runner(tmp_path):
    from mmengine.runner import Runner
    root = str(tmp_path / 'data')
    generate_referring_dataset(root, splits=dict(train=3, val=2), seed=2)
    vocab = str(tmp_path / 'vocab.txt')
    build_vocab_from_refs(osp.join(root, 'refsyn', 'refs(unc).p'), vocab)
    cfg = _tiny_cfg(vocab)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
    cfg.train_dataloader.batch_size = 2
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 2
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    runner = Runner.from_cfg(cfg)
    before = runner.model.fusion.seed_embed.detach().clone()
    runner.train()
    assert not torch.equal(before, runner.model.fusion.seed_embed)
    metrics = runner.val_loop.run()
    assert {'oIoU', 'mIoU', 'Prec@0.5'} <= set(metrics)
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_2.pth'))


def test_backbone_loads_a_smaller_grid_checkpoint_with_bicubic_positions(tmp_path, vocab_file):
    """The 480 recipe loads 384 weights (24x24 grid) into a 30x30 ViT; same path, tiny. The
    official code resizes once at load with timm 0.6.11's ``resize_pos_embed`` (bicubic,
    align_corners=False; restr.yaml pins timm 0.6.11)."""
    cfg = _tiny_cfg(vocab_file)
    small = dict(cfg.model.backbone, img_size=(48, 48))  # 6x6 grid, the tiny model has 8x8
    src = MODELS.build(small)
    with torch.no_grad():  # (built zero; random so that the resize is visible)
        src.pos_embed.normal_()
        src.patch_embed.projection.bias.normal_()
    path = str(tmp_path / 'vit.pth')
    torch.save(dict(state_dict=src.state_dict()), path)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    model = MODELS.build(cfg.model)
    model.init_weights()
    pos = src.pos_embed.detach()
    grid = pos[:, 1:].reshape(1, 6, 6, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(8, 8), mode='bicubic', align_corners=False)
    expected = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    torch.testing.assert_close(model.backbone.pos_embed.detach(), expected)
    torch.testing.assert_close(model.backbone.patch_embed.projection.bias,
                               src.patch_embed.projection.bias)  # patch_bias=True loads it
