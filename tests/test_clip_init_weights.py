"""CLIP weights are loaded in init_weights (once, in place; by mmengine's Runner), models that
load a checkpoint never read the CLIP file, and get_flops takes --cfg-options (split from
test_inferencer.py; tests unchanged)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmseg_ovseg  # noqa: F401
from mmseg_ovseg.apis import OpenVocabInferencer, merge_cfg_options
from mmseg_ovseg.clip.builder import create_clip
from mmseg_ovseg.models.backbones.clip_vit import CLIPVisionTransformer
from test_inferencer import CONFIG, REPO, SAN_FULL, build
from tool_loader import load_tool


# ----------------------------------------------- CLIP weights through init_weights
def _tiny_clip_file(tmp_path, clip_cfg):
    torch.manual_seed(1)
    clip = create_clip(clip_cfg)
    path = tmp_path / 'clip.pt'
    torch.save(clip.state_dict(), path)
    return clip, str(path)


def test_vit_loads_clip_in_init_weights_once_and_in_place(tmp_path):
    cfg = Config.fromfile(CONFIG).model.backbone.clip_model
    clip, path = _tiny_clip_file(tmp_path, cfg)
    kwargs = dict(pretrained=path, pos_grid=(6, 5), fold_class_embedding=True,
                  interpolate_mode='bilinear')
    plain = CLIPVisionTransformer(cfg, **kwargs)  # no file read here
    missing = CLIPVisionTransformer(cfg, **dict(kwargs, pretrained=str(tmp_path / 'no.pt')))
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert {k: v.shape for k, v in missing.state_dict().items()} == shapes
    params = dict(plain.named_parameters())
    plain.init_weights()
    assert {k: v.shape for k, v in plain.state_dict().items()} == shapes
    assert all(p is params[k] for k, p in plain.named_parameters())  # optimizer-safe
    pos = clip.visual.positional_embedding.detach().clone()
    pos[0] += clip.visual.class_embedding.detach()  # fold, then resize: once
    from mmseg_ovseg.models.backbones.clip_vit import resize_clip_pos_embed
    expected = resize_clip_pos_embed(pos, plain.clip_grid, (6, 5), 1, 'bilinear')
    torch.testing.assert_close(plain.visual.positional_embedding.detach(), expected)
    plain.init_weights()  # mmengine: a second call does nothing
    torch.testing.assert_close(plain.visual.positional_embedding.detach(), expected)
    plain.load_clip_weights(path)  # a new load starts again from the file
    torch.testing.assert_close(plain.visual.positional_embedding.detach(), expected)
    with pytest.raises(FileNotFoundError, match='no.pt'):
        missing.init_weights()


@pytest.mark.slow
def test_runner_training_runs_init_weights(tmp_path):
    """mmengine's Runner calls model.init_weights() in train(): the CLIP file named by
    clip_pretrained reaches both (frozen) towers."""
    from mmengine.runner import Runner

    from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
    cfg = Config.fromfile(CONFIG)
    clip, path = _tiny_clip_file(tmp_path, cfg.model.backbone.clip_model)
    root = str(tmp_path / 'data')
    generate_synthetic_dataset(root, num_train=2, num_val=1, seed=0, size=32)
    opts = {'clip_pretrained': path, 'work_dir': str(tmp_path / 'work'),
            'train_cfg.max_iters': 1, 'train_cfg.val_interval': 100,
            'train_dataloader.batch_size': 1, 'train_dataloader.dataset.data_root': root,
            'val_dataloader.dataset.data_root': root, 'test_dataloader.dataset.data_root': root,
            'default_hooks.checkpoint.interval': 100, 'model.backbone.frozen': True}
    runner = Runner.from_cfg(merge_cfg_options(cfg, opts))
    runner.train()
    model = runner.model
    assert torch.equal(model.backbone.visual.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(model.text_encoder.token_embedding.weight,
                       clip.token_embedding.weight)


@pytest.mark.slow
def test_full_config_loads_a_checkpoint_without_the_clip_file(tmp_path):
    """init_model(san_vitb16_coco-stuff.py, ckpt) and our inferencer with the CLIP file
    (pretrained/ViT-B-16.pt) absent: the checkpoint holds every weight."""
    from mmseg.apis import init_model
    cfg = Config.fromfile(SAN_FULL)
    assert not osp.exists(osp.join(REPO, cfg.clip_pretrained))
    assert not osp.exists(cfg.clip_pretrained)
    torch.manual_seed(0)
    model = build(SAN_FULL)
    path = tmp_path / 'san.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=list(model.vocabulary)))), path)
    loaded = init_model(SAN_FULL, str(path), device='cpu')
    for key in ('backbone.visual.positional_embedding', 'text_encoder.text_projection'):
        assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])
    del loaded
    inf = OpenVocabInferencer(SAN_FULL, str(path), classes=['cat', 'dog', 'sky'],
                              templates='single')
    assert inf.classes == ['cat', 'dog', 'sky']
    key = 'backbone.visual.transformer.resblocks.0.attn.in_proj_weight'
    assert torch.equal(inf.model.state_dict()[key], model.state_dict()[key])



@pytest.mark.slow
def test_get_flops_cfg_options(capsys):
    get_flops = load_tool('analysis_tools/get_flops')
    full = get_flops.get_flops(CONFIG, (32, 32))
    res = get_flops.main([CONFIG, '--shape', '32', '32', '--cfg-options',
                          'model.vocabulary=cat,dog', 'clip_pretrained=no_such_file.pt'])
    assert 0 < res['flops'] < full['flops']  # 2 classes instead of 8 in the class matmul
    assert 'Flops:' in capsys.readouterr().out
