"""SAN checkpoints and shipped configs: the official (MendelXu/SAN) and mmseg 1.2 layouts through
san2ovseg / mmseg_san2ovseg, the paper's parameter counts, every SAN config building, the tiny
synthetic config training a step. The tiny-width model tests are in test_san_model.py."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401  (registers the plugin's modules)
from official_fixtures import official_keys, random_official_state
from tool_loader import load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLASSES = ['cat', 'dog', 'sky', 'road']


def _samples(n, h, w, num_classes=len(CLASSES), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        seg = torch.randint(0, num_classes, (1, h // 16, w // 16), generator=g)
        seg = F.interpolate(seg[None].float(), size=(h, w), mode='nearest')[0].long()
        seg[:, :4, :4] = 255  # ignored pixels
        s = SegDataSample(gt_sem_seg=PixelData(data=seg))
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        out.append(s)
    return out


def _load_tool(name):
    return load_tool(f'model_converters/{name}')


@pytest.mark.slow
def test_vitb16_trainable_parameter_count():
    """Paper: 8.37M trainable parameters for ViT-B/16 (Table 1 / Sec. 4.2)."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'san_vitb16_coco-stuff.py'))
    cfg.model.backbone.pretrained = None
    cfg.model.text_encoder.pretrained = None
    model = MODELS.build(cfg.model)
    counts = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            group = name.split('.')[0] if not name.startswith('decode_head') else \
                '.'.join(name.split('.')[:2])
            counts[group] = counts.get(group, 0) + p.numel()
    total = sum(counts.values())
    # side adapter 6,915,504 (incl. 4 fusion layers 744,384) + mask/bias decoders 1,303,554
    # + background embedding 512 + CLIP position embedding 197 x 768 = 151,296
    assert counts['backbone'] == 197 * 768
    assert counts['decode_head.side_adapter'] == 6915504
    assert counts['decode_head.mask_decoder'] + counts['decode_head.bias_decoder'] == 1303554
    assert counts['decode_head.bg_embed'] == 512
    assert total == 8370866 and round(total / 1e6, 2) == 8.37
    assert 'text_encoder' not in counts


# ---------------------------------------------------------------------- official converter
# The official layouts are recorded facts (tests/fixtures/official/san_*.json: the official
# MendelXu/SAN model and mmseg 1.2's SAN built from their own configs), never derived from
# our modules, so these tests fail when the converter or our module names drift from them.


def _build_config(name):
    """Our model of ``configs/<name>`` without CLIP files (the checkpoint brings them)."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    cfg.model.backbone.pretrained = cfg.model.text_encoder.pretrained = None
    return MODELS.build(cfg.model), cfg


@pytest.fixture(scope='module')
def vitb16_model():
    return _build_config('san_vitb16_coco-stuff.py')


@pytest.fixture(scope='module')
def official_vitb16():
    return random_official_state('san_vit-b16_official')


@pytest.mark.slow
def test_official_vitb16_checkpoint_converts_and_loads_strictly(vitb16_model, official_vitb16):
    """Official SAN ViT-B/16 release layout (random values) -> san2ovseg -> strict load into
    configs/san_vitb16_coco-stuff.py; every tensor lands where the mapping says."""
    model, cfg = vitb16_model
    tool = _load_tool('san2ovseg')
    official = official_vitb16
    converted, fusion = tool.convert(official)
    # official fusion map "0->0, 3->1, 6->2, 9->3": side blocks 0-3 receive fusion
    assert tuple(fusion) == tuple(cfg.model.decode_head.side_adapter.fusion_index)
    assert len(converted) == len(official) - 2  # criterion.empty_weight, attn_mask dropped
    model.load_state_dict(converted, strict=True)
    sd = model.state_dict()
    pairs = {
        'clip_visual_extractor.resblocks.8.attn.in_proj_weight':
            'backbone.visual.transformer.resblocks.8.attn.in_proj_weight',
        'clip_rec_head.resblocks.0.mlp.c_fc.weight':  # the split: rec block 0 = CLIP block 9
            'backbone.visual.transformer.resblocks.9.mlp.c_fc.weight',
        'clip_rec_head.proj': 'backbone.visual.proj',
        'ov_classifier.bg_embed': 'decode_head.bg_embed',
        'ov_classifier.token_embedding.weight': 'text_encoder.token_embedding.weight',
        'side_adapter_network.fusion_layers.layer_3.input_proj.1.weight':
            'decode_head.side_adapter.fusion_layers.3.1.weight',
        'side_adapter_network.vit_model.patch_embed.proj.bias':
            'decode_head.side_adapter.patch_embed.bias',
        'side_adapter_network.mask_decoder.attn_mlp.layers.2.weight':
            'decode_head.bias_decoder.attn_mlp.layers.2.weight',
        'side_adapter_network.mask_decoder.bias_scaling.weight':
            'decode_head.bias_decoder.bias_scaling.weight',
    }
    for src, dst in pairs.items():
        assert torch.equal(sd[dst], official[src]), (src, dst)


@pytest.mark.slow
def test_vitl14_checkpoints_convert_and_fit_the_config():
    """Official SAN ViT-L/14@336 and mmseg's SAN ViT-L/14 release layouts -> san2ovseg /
    mmseg_san2ovseg -> exactly the key names and shapes of configs/san_vitl14_coco-stuff.py,
    loaded strictly (zero tensors: a ViT-L full of random values is slow to make)."""
    from mmseg_ovseg.utils.converter_cli import state_dict_mismatch
    model, cfg = _build_config('san_vitl14_coco-stuff.py')
    # official "0->0, 6->1, 12->2, 18->3", recognition from layer 18
    assert cfg.model.split_layer == 18 and cfg.model.fusion_layers == (0, 6, 12, 18)
    for layout, tool_name in (('san_vit-l14_official', 'san2ovseg'),
                              ('san_vit-l14_mmseg', 'mmseg_san2ovseg')):
        src = {k: torch.zeros(shape) for k, shape in official_keys(layout).items()}
        converted = _load_tool(tool_name).convert(src)
        if tool_name == 'san2ovseg':
            converted, fusion = converted
            assert tuple(fusion) == tuple(cfg.model.decode_head.side_adapter.fusion_index)
        assert state_dict_mismatch(model, converted) is None, layout
        model.load_state_dict(converted, strict=True)


@pytest.mark.slow
def test_mmseg_vitb16_checkpoint_converts_and_loads_strictly(vitb16_model):
    """mmseg 1.2's SAN ViT-B/16 layout (its own config) -> mmseg_san2ovseg -> strict load."""
    model, _ = vitb16_model
    tool = _load_tool('mmseg_san2ovseg')
    src = random_official_state('san_vit-b16_mmseg')
    converted = tool.convert(src)
    model.load_state_dict(converted, strict=True)
    sd = model.state_dict()
    # layout changes the converter makes (mmseg: nn.Linear / (1, N, C) / split CLIP)
    assert torch.equal(sd['backbone.visual.proj'],
                       src['decode_head.rec_with_attnbias.proj.weight'].t())
    assert torch.equal(sd['backbone.visual.positional_embedding'],
                       src['image_encoder.pos_embed'][0])
    assert torch.equal(sd['backbone.visual.class_embedding'],
                       src['image_encoder.cls_token'].reshape(-1))
    assert torch.equal(sd['backbone.visual.transformer.resblocks.9.ln_1.weight'],
                       src['decode_head.rec_with_attnbias.layers.0.norms.0.weight'])
    assert torch.equal(sd['decode_head.side_adapter.fusion_layers.2.1.weight'],
                       src['decode_head.side_adapter_network.conv_clips.2.1.conv.weight'])


@pytest.mark.slow
def test_official_converter_errors_and_cli(tmp_path):
    tool = _load_tool('san2ovseg')
    # the official key names with one-element tensors: the converter only renames
    official = {k: torch.zeros(1) for k in official_keys('san_vit-b16_official')}
    # a missing parameter and an unknown key are errors
    broken = dict(official)
    broken.pop('side_adapter_network.vit_model.blocks.1.mlp.fc2.weight')
    with pytest.raises(KeyError, match='missing'):
        tool.convert(broken)
    with pytest.raises(KeyError, match='not recognised'):
        tool.convert({**official, 'foo.bar': torch.zeros(1)})
    # the CLI: DST written (detectron2 "model" wrapper), and a clear error (exit 1, nothing
    # written) on a broken SRC
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'san.pth'
    torch.save(dict(model=official, iteration=59999), src)
    assert tool.main([str(src), str(dst)]) == 0
    loaded = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    assert set(loaded) == set(tool.convert(official)[0])
    torch.save(dict(model=broken), tmp_path / 'broken.pth')
    res = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'model_converters',
                                                   'san2ovseg.py'),
                          str(tmp_path / 'broken.pth'), str(tmp_path / 'never.pth')],
                         capture_output=True, text=True)
    assert res.returncode == 1 and 'missing' in res.stderr
    assert not (tmp_path / 'never.pth').exists()


@pytest.mark.slow
def test_tiny_synthetic_config_trains_a_step():
    """configs/san_tiny_synthetic.py builds; one optimiser step lowers nothing to NaN."""
    init_default_scope('mmseg')
    torch.manual_seed(0)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'san_tiny_synthetic.py'))
    model = MODELS.build(cfg.model)
    before = model.decode_head.side_adapter.pos_embed.detach().clone()
    model.init_weights()  # what the Runner calls; must not fail nor re-initialise the head
    assert torch.equal(before, model.decode_head.side_adapter.pos_embed)
    model.train()
    assert all(p.requires_grad for p in model.backbone.parameters())  # random CLIP trains
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    data = dict(inputs=[torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8)] * 2,
                data_samples=_samples(2, 128, 128, num_classes=8))
    for _ in range(2):
        losses = model(**model.data_preprocessor(data, True), mode='loss')
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model.test_step(dict(inputs=data['inputs'][:1],
                                   data_samples=_samples(1, 128, 128, num_classes=8)))
    assert out[0].seg_logits.data.shape == (8, 128, 128)


SAN_CONFIGS = sorted(osp.basename(p) for p in glob.glob(osp.join(ROOT, 'configs', 'san_*.py')))
VOCAB_SIZES = {'coco-stuff': 171, 'ade-150': 150, 'ade-847': 847, 'pc-59': 59, 'pc-459': 459,
               'voc': 20, 'synthetic': None}


@pytest.mark.parametrize('name', SAN_CONFIGS)
@pytest.mark.slow
def test_every_san_config_builds_on_cpu(name):
    """Every shipped SAN config builds its model on CPU with its vocabulary; the ViT-L/14
    model has the paper's 9.32M trainable parameters."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    for key in ('backbone', 'text_encoder'):
        if 'pretrained' in cfg.model[key]:
            cfg.model[key].pretrained = None
    model = MODELS.build(cfg.model)
    size = next((n for k, n in VOCAB_SIZES.items() if k in name), None)
    if size is not None:
        assert len(model.vocabulary) == model.decode_head.num_classes == size
    assert cfg.model.test_cfg.mode == 'whole'
    if 'vitl14' in name:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == 9321650 and round(trainable / 1e6, 2) == 9.32
        assert (model.clip_scale, model.split_layer) == (0.7, 18)
    del model
