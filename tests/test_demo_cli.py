"""tools/demo.py's command line (and the ablation driver's): --max-iters and --cfg-options
reach the config it trains."""
import importlib.util
import os.path as osp

import pytest

from tool_loader import load_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _demo():
    spec = importlib.util.spec_from_file_location('demo', osp.join(REPO, 'tools', 'demo.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cfg_options_and_max_iters(tmp_path):
    demo = _demo()
    ckpt = str(tmp_path / 'other.pt')
    args = demo.parse_args([
        '--work-dir', str(tmp_path / 'wd'), '--max-iters', '30', '--cfg-options',
        f'model.backbone.pretrained={ckpt}', f'model.text_encoder.pretrained={ckpt}',
        'model.decode_head.logit_scale=3.5'])
    cfg = demo.build_cfg(args)
    assert cfg.model.backbone.pretrained == ckpt == cfg.model.text_encoder.pretrained
    assert cfg.model.decode_head.logit_scale == 3.5
    assert cfg.train_cfg.max_iters == 30 and cfg.default_hooks.checkpoint.interval == 30
    # the phases are cut at the new end, none starts after it
    assert all(s.end <= 30 and s.get('begin', 0) < 30 for s in cfg.param_scheduler)
    # a longer run: the last phase is stretched to the new end (no iterations at lr 0)
    longer = demo.build_cfg(demo.parse_args(['--work-dir', str(tmp_path), '--max-iters',
                                             '5000']))
    assert max(s.end for s in longer.param_scheduler) == 5000 == longer.train_cfg.max_iters
    default = demo.build_cfg(demo.parse_args(['--work-dir', str(tmp_path)]))
    assert [s.end for s in longer.param_scheduler][:-1] == \
        [s.end for s in default.param_scheduler][:-1]
    # the demo pretrains (if missing) the tiny-CLIP checkpoint the config loads: the default
    # one, or the one given with --cfg-options (not the default then); none for a random CLIP
    assert demo.tiny_clip_checkpoint(cfg) == ckpt
    assert demo.tiny_clip_checkpoint(default) == demo.TINY_CLIP
    synthetic = demo.build_cfg(demo.parse_args(['--work-dir', str(tmp_path), '--config',
                                                'configs/san_tiny_synthetic.py']))
    assert demo.tiny_clip_checkpoint(synthetic) is None


def test_ablation_driver_variants_and_max_iters(tmp_path):
    """run_open_vocab_ablations: --cfg-options needs --tag, which keys the cache apart from
    the plain row; overrides and --max-iters reach the dumped run config."""
    from mmengine.config import Config
    drv = load_tool('misc/run_open_vocab_ablations')
    with pytest.raises(SystemExit):
        drv.parse_args(['--cfg-options', 'optim_wrapper.optimizer.lr=1e-3'])
    args = drv.parse_args(['--cfg-options', 'optim_wrapper.optimizer.lr=1e-3', '--tag', 'lr'])
    assert drv.run_key('main', 'san', 0, 1200, args.tag) == 'main/san+lr/seed0/it1200'
    assert drv.run_key('main', 'san', 0, 1200) == 'main/san/seed0/it1200'
    path = drv.build_config(drv.TABLES['main']['san'], 1, 1200, None, str(tmp_path),
                            extra_options=args.cfg_options)
    cfg = Config.fromfile(path)
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.randomness.seed == 1
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == 1200
    assert max(s.end for s in cfg.param_scheduler) == 1200


def test_ablation_driver_clip_preset_and_command(tmp_path):
    """--clip-preset selects the preset's cached checkpoint (exclusive with
    --clip-checkpoint, unknown presets refused), and the markdown's command repeats the
    options that select the cached runs, so a row can be re-run as written."""
    from mmseg_ovseg.clip.tiny import checkpoint_for_preset
    drv = load_tool('misc/run_open_vocab_ablations')
    args = drv.parse_args(['--clip-preset', 'demo-2400', '--max-iters', '1600', '--tag', 'w',
                           '--cfg-options', 'model.decode_head.side_adapter.embed_dims=96'])
    assert args.clip_checkpoint == checkpoint_for_preset('demo-2400')
    for bad in (['--clip-preset', 'demo-2400', '--clip-checkpoint', 'x.pt'],
                ['--clip-preset', 'nope']):
        with pytest.raises(SystemExit):
            drv.parse_args(bad)
    opts = drv.command_options(args)
    assert opts == (' --clip-preset demo-2400 --max-iters 1600 --tag w --cfg-options '
                    'model.decode_head.side_adapter.embed_dims=96')
    key = drv.run_key('main', 'san', 0, 1600, 'w')
    results = {key: dict(seed=0, pAcc=90.0, mIoU_seen=60.0, mIoU_unseen=50.0, hIoU=54.5)}
    text = drv.markdown('main', results, [0], 1600, 'w', opts)
    row = next(line for line in text.splitlines() if 'attention bias' in line)
    assert '| 60.0 | 50.0 | 54.5 | 90.0 |' in row
    assert row.endswith('--rows san --seeds 0' + opts + '` |')


def test_ablation_driver_prepares_only_the_clip_the_rows_load(tmp_path, monkeypatch):
    """main() pretrains (if missing) only the checkpoint the rows load: the preset's with
    --clip-preset, the default without, none for a given --clip-checkpoint; SAN's temperature
    is read from a swapped-in checkpoint unless --clip-logit-scale is given."""
    from mmseg_ovseg.clip import tiny
    from mmseg_ovseg.datasets import concept_seg
    drv = load_tool('misc/run_open_vocab_ablations')
    ensured, scales = [], []
    monkeypatch.setattr(concept_seg, 'generate_concept_dataset', lambda root: None)
    monkeypatch.setattr(tiny, 'ensure_tiny_clip',
                        lambda path, preset='demo', **kw: ensured.append((path, preset)))
    monkeypatch.setattr(tiny, 'read_logit_scale', lambda path: 3.488289)
    monkeypatch.setattr(drv, 'run_one', lambda table, row, seed, args, *a: scales.append(
        args.clip_logit_scale))
    base = ['--table', 'main', '--rows', 'san', '--seeds', '0']
    drv.main(base + ['--clip-preset', 'demo-2400', '--out', str(tmp_path / 'p')])
    assert ensured == [(tiny.checkpoint_for_preset('demo-2400'), 'demo-2400')]
    assert scales == [3.4883]
    ensured.clear(), scales.clear()
    drv.main(base + ['--out', str(tmp_path / 'd')])
    assert ensured == [(drv.DEFAULT_CLIP, 'demo')] and scales == [None]
    ensured.clear(), scales.clear()
    clip = tmp_path / 'clip.pt'
    clip.write_bytes(b'weights')
    drv.main(base + ['--clip-checkpoint', str(clip), '--clip-logit-scale', '3.0', '--out',
                     str(tmp_path / 'c')])
    assert ensured == [] and scales == [3.0]


def test_ablation_driver_refuses_a_cached_run_of_another_clip(tmp_path, capsys):
    """A cached result records the CLIP file's digest; once the file at that path holds other
    weights the cached run is refused instead of being reported as a run of the new CLIP."""
    drv = load_tool('misc/run_open_vocab_ablations')
    clip = tmp_path / 'clip.pt'
    clip.write_bytes(b'weights of the first CLIP')
    args = drv.parse_args(['--clip-checkpoint', str(clip), '--out', str(tmp_path / 'out')])
    key = drv.run_key('main', 'san', 0, None)
    first = drv.clip_digest(str(clip))
    assert len(first) == 16
    results = {key: dict(hIoU=25.0, clip_sha256=first)}
    # same file: the cached entry is returned (nothing is trained)
    assert drv.run_one('main', 'san', 0, args, results, str(tmp_path / 'r.json'))['hIoU'] == 25.0
    clip.write_bytes(b'weights of another CLIP')
    assert drv.clip_digest(str(clip)) != first
    with pytest.raises(SystemExit, match=rf'{key}.*sha256 {first}.*another CLIP'):
        drv.run_one('main', 'san', 0, args, results, str(tmp_path / 'r.json'))
    # entries from before the digests are returned with a printed notice
    results = {key: dict(hIoU=24.0)}
    assert drv.run_one('main', 'san', 0, args, results, str(tmp_path / 'r.json'))['hIoU'] == 24.0
    assert 'not checked' in capsys.readouterr().out
    assert drv.clip_digest(str(tmp_path / 'missing.pt')) is None


def test_ablation_driver_refuses_a_finished_work_dir_of_another_clip(tmp_path):
    """The same check on a run finished in its work dir but not yet in results.json (a driver
    stopped after training): taken as it is only if its CLIP file is unchanged."""
    import json
    drv = load_tool('misc/run_open_vocab_ablations')
    clip = tmp_path / 'clip.pt'
    clip.write_bytes(b'weights of the first CLIP')
    out = tmp_path / 'out'
    args = drv.parse_args(['--clip-checkpoint', str(clip), '--out', str(out)])
    key = drv.run_key('main', 'san', 0, None)
    work_dir = str(out / key)
    # what a previous driver left: the same run config and its finished.json
    drv.build_config(drv.TABLES['main']['san'], 0, None, None, work_dir, str(clip))
    with open(osp.join(work_dir, 'finished.json'), 'w') as f:
        json.dump(dict(wall_s=1.0, cpu_s=1.0, clip_sha256=drv.clip_digest(str(clip))), f)
    clip.write_bytes(b'weights of another CLIP')
    with pytest.raises(SystemExit, match='another CLIP'):
        drv.run_one('main', 'san', 0, args, {}, str(tmp_path / 'r.json'))
