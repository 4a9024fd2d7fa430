"""tools/misc/check_weights.py and the weight-path convention of the shipped configs.

Convention (docs/weights.md): every full-size config names its weights under ``pretrained/``;
a CLIP file is named as open_clip's ``download_pretrained_from_url`` writes OpenAI's release of
the config's model (``ViT-B-16-quickgelu`` -> ``pretrained/ViT-B-16.pt``).
"""
import ast
import glob
import os.path as osp

import open_clip
import pytest
import torch
from mmengine.config import Config

from mmseg_ovseg.clip.builder import _openai_signature, create_clip
from tool_loader import REPO, load_tool

cw = load_tool('misc/check_weights')

TINY = dict(embed_dim=16, quick_gelu=False,
            vision_cfg=dict(image_size=32, layers=1, width=32, head_width=16, patch_size=16),
            text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
OTHER = dict(TINY, embed_dim=24)  # same keys, other text_projection / proj shapes

CONFIG = """
tiny = {tiny!r}
clip_pretrained = {clip!r}
model = dict(
    type='AnyModel',
    backbone=dict(type='CLIPVisionTransformer', clip_model=tiny, pretrained=clip_pretrained,
                  init_cfg=None),
    text_encoder=dict(type='OVCLIPTextEncoder', clip_model=tiny, pretrained=clip_pretrained,
                      templates='single'),
    neck=dict(type='X', init_cfg=dict(type='Pretrained', checkpoint={ckpt!r})),
    language_encoder=dict(type='Y', glove_file={glove!r}))
"""


def _write_config(folder, name, clip, ckpt='pretrained/vit.pth', glove=None):
    path = osp.join(str(folder), name)
    with open(path, 'w') as f:
        f.write(CONFIG.format(tiny=TINY, clip=clip, ckpt=ckpt, glove=glove))
    return path


def _save_clip(path, arch, openai_extras=False):
    torch.manual_seed(0)
    state = create_clip(arch).state_dict()
    if openai_extras:  # the entries only OpenAI's TorchScript archives carry
        state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77),
                     vocab_size=torch.tensor(49408))
    torch.save(state, path)


@pytest.fixture
def weights_root(tmp_path):
    root = tmp_path / 'root'
    (root / 'pretrained').mkdir(parents=True)
    (root / 'glove').mkdir()
    _save_clip(root / 'pretrained' / 'tiny.pt', TINY)
    _save_clip(root / 'pretrained' / 'other.pt', OTHER)
    _save_clip(root / 'pretrained' / 'openai_like.pt', TINY, openai_extras=True)
    (root / 'glove' / 'g.txt').write_text('the 0.1 0.2\n')
    return root


@pytest.mark.slow
def test_full_size_configs_follow_the_weight_convention():
    """Every weight file a full-size config names is under pretrained/; CLIP files carry the
    name of OpenAI's release of the config's own open_clip model."""
    openai = cw.openai_clip_files()
    assert openai['ViT-B-16.pt'] == 'ViT-B-16' and openai['RN50.pt'] == 'RN50'
    configs = [c for c in sorted(glob.glob(osp.join(REPO, 'configs', '*.py')))
               if 'tiny' not in osp.basename(c)]
    assert len(configs) >= 20
    kinds = set()
    for config in configs:
        cfg = Config.fromfile(config)
        for ref in cw.weight_refs(cfg.model):
            name = osp.basename(config)
            kinds.add(ref['kind'])
            assert ref['path'].startswith('pretrained/'), (name, ref['where'], ref['path'])
            if ref['kind'] == 'clip':
                assert ref['path'] == cfg.clip_pretrained, (name, ref['where'])
                model = ref['tower']['clip_model']
                base = osp.basename(ref['path'])
                assert base in openai, (name, base)
                if isinstance(model, str):
                    plain = model[:-len('-quickgelu')] if model.endswith('-quickgelu') \
                        else model
                    assert openai[base] == plain, (name, base, model)
                else:  # written out as a dict: the architecture of OpenAI's release
                    release = open_clip.get_model_config(openai[base])
                    assert _openai_signature(model['vision_cfg'], model['embed_dim']) == \
                        _openai_signature(release['vision_cfg'], release['embed_dim']), name
                    assert model['text_cfg'] == dict(release['text_cfg']), name
    assert kinds == {'clip', 'checkpoint'}  # SegViT/ReSTR ViTs; GloVe is off by default


def test_weight_refs_and_statuses(weights_root, tmp_path):
    ok = _write_config(tmp_path, 'ok.py', 'pretrained/tiny.pt', glove='glove/g.txt')
    refs = cw.weight_refs(Config.fromfile(ok).model)
    assert [(r['where'], r['kind'], r['path']) for r in refs] == [
        ('model.backbone.pretrained', 'clip', 'pretrained/tiny.pt'),
        ('model.text_encoder.pretrained', 'clip', 'pretrained/tiny.pt'),
        ('model.neck.init_cfg.checkpoint', 'checkpoint', 'pretrained/vit.pth'),
        ('model.language_encoder.glove_file', 'glove', 'glove/g.txt')]

    res = {r['where']: r for r in cw.check_config(ok, str(weights_root))}
    assert res['model.backbone.pretrained']['status'] == 'ok'
    assert res['model.text_encoder.pretrained']['status'] == 'ok'
    assert res['model.neck.init_cfg.checkpoint']['status'] == 'MISSING'
    assert res['model.neck.init_cfg.checkpoint']['file'] == str(
        weights_root / 'pretrained' / 'vit.pth')
    assert res['model.language_encoder.glove_file']['status'] == 'present'
    # resolved against --root: from elsewhere every file is missing
    assert {r['status'] for r in cw.check_config(ok, str(tmp_path))} == {'MISSING'}
    # --no-load: presence only
    res = cw.check_config(ok, str(weights_root), load=False)
    assert res[0]['status'] == 'present'


def test_clip_files_that_do_not_load_are_reported(weights_root, tmp_path):
    wrong = _write_config(tmp_path, 'wrong.py', 'pretrained/other.pt')
    res = cw.check_config(wrong, str(weights_root))
    for r in res[:2]:
        assert r['status'] == 'LOAD FAILED', r
        assert 'other.pt' in r['detail'] and '(32, 24)' in r['detail']  # the shapes named
    # an OpenAI checkpoint into nn.GELU towers: the builder's QuickGELU refusal
    openai = _write_config(tmp_path, 'openai.py', 'pretrained/openai_like.pt')
    res = cw.check_config(openai, str(weights_root))
    assert res[0]['status'] == 'LOAD FAILED' and 'QuickGELU' in res[0]['detail']


def test_each_tower_and_file_is_loaded_once(weights_root, tmp_path, monkeypatch):
    calls = []
    real = cw.check_clip_load
    monkeypatch.setattr(cw, 'check_clip_load', lambda t, p: calls.append(p) or real(t, p))
    a = _write_config(tmp_path, 'a.py', 'pretrained/tiny.pt')
    b = _write_config(tmp_path, 'b.py', 'pretrained/tiny.pt')
    cache = {}
    for config in (a, b):
        assert [r['status'] for r in cw.check_config(config, str(weights_root), cache=cache)
                ][:2] == ['ok', 'ok']
    assert len(calls) == 2  # backbone and text encoder, once for both configs


def test_main_output_and_exit_status(weights_root, tmp_path, capsys):
    ok = _write_config(tmp_path, 'ok.py', 'pretrained/tiny.pt', ckpt='pretrained/tiny.pt')
    assert cw.main(['--configs', ok, '--root', str(weights_root)]) == 0
    out = capsys.readouterr().out
    assert out.count('ok          model.') == 2 and 'present     model.neck' in out

    missing = _write_config(tmp_path, 'missing.py', 'pretrained/ViT-B-16.pt')
    assert cw.main(['--configs', missing, '--root', str(weights_root)]) == 1
    out = capsys.readouterr().out
    assert 'MISSING     model.backbone.pretrained = pretrained/ViT-B-16.pt' in out
    assert 'MISSING     model.neck.init_cfg.checkpoint' in out
    fetch = [line.split('fetch: ', 1)[1] for line in out.splitlines() if 'fetch: ' in line]
    assert len(fetch) == 1  # once per missing file
    # the printed command is valid Python calling open_clip's helper with the OpenAI URL of
    # ViT-B-16, whose file name is the one the config expects, into the config's folder
    code = fetch[0].split('-c ', 1)[1].strip('"')
    call = ast.parse(code).body[1].value
    assert ast.unparse(call.func) == 'open_clip.download_pretrained_from_url'
    url_call = call.args[0]
    url = open_clip.get_pretrained_url(*[a.value for a in url_call.args])
    assert osp.basename(url) == 'ViT-B-16.pt'
    assert url.startswith('https://openaipublic')
    kw = {k.arg: k.value.value for k in call.keywords}
    assert kw == {'cache_dir': str(weights_root / 'pretrained')}

    assert cw.main(['--configs', str(tmp_path / 'nope.py')]) == 1
    assert 'MISSING config file' in capsys.readouterr().out
