"""Run the open-vocabulary tables of docs/open_vocab.md on the generated concept benchmark.

Each row is a config of ``configs/*_tiny_concepts*.py`` plus overrides; each (row, seed) is one
training run of ``tools/train.py`` in its own process, evaluated at the end with
``ZeroShotIoUMetric`` (pAcc, mIoU(S), mIoU(U), hIoU on the 'concepts' split). Results are
cached per run in ``<out>/results.json`` (a run is not repeated unless ``--force``), and each
table is written as markdown rows (mean +- sample std over seeds, and the per-seed values) to
``<out>/<table>.md`` and printed.

    python tools/misc/run_open_vocab_ablations.py --table main --seeds 0 1
    python tools/misc/run_open_vocab_ablations.py --table zegclip --rows ce --seeds 0 1
    python tools/misc/run_open_vocab_ablations.py --list

Before the first run it writes the benchmark to ``data/concepts`` and pretrains the tiny CLIP
when ``work_dirs/tiny_clip/ovseg-tiny-clip.pt`` is missing (``ensure_tiny_clip``).
``--clip-preset demo-2400`` runs the rows with that preset's checkpoint instead (pretrained
first when missing; the tables of docs/open_vocab.md), ``--clip-checkpoint`` with any file;
SAN's ``logit_scale`` is then read from the checkpoint unless ``--clip-logit-scale`` is given.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import resource
import shlex
import subprocess
import sys
import time
from typing import Dict, List

from mmengine.config import DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

METRICS = ('pAcc', 'mIoU_seen', 'mIoU_unseen', 'hIoU')
CE_LOSS = [dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)]

# table -> row -> dict(config, options (merged into the config), label, needs (row whose
# checkpoint of the same seed is load_from)).
TABLES: Dict[str, Dict[str, dict]] = {
    'main': {
        'san': dict(config='configs/san_tiny_concepts.py',
                    label='SAN, tiny CLIP (frozen, attention bias)'),
        'san_randclip': dict(config='configs/san_tiny_concepts-randclip.py',
                             label='SAN, random-init CLIP (control)'),
        'san_fully': dict(config='configs/san_tiny_concepts-fully.py',
                          label='SAN, fully supervised (ceiling)'),
        'zegclip': dict(config='configs/zegclip_tiny_concepts-zs.py',
                        label='ZegCLIP inductive, tiny CLIP (frozen + deep prompts)'),
        'zegclip_st': dict(config='configs/zegclip_tiny_concepts-zs-st.py',
                           label='ZegCLIP self-training (from the inductive run)',
                           needs='zegclip'),
        'zegclip_randclip': dict(config='configs/zegclip_tiny_concepts-zs-randclip.py',
                                 label='ZegCLIP inductive, random-init CLIP (control)'),
        'zegclip_fully': dict(config='configs/zegclip_tiny_concepts-fully.py',
                              label='ZegCLIP, fully supervised (ceiling)'),
        'baseline': dict(config='configs/baseline_tiny_concepts.py',
                         label='one-stage baseline, tiny CLIP (frozen)'),
        'baseline_randclip': dict(config='configs/baseline_tiny_concepts-randclip.py',
                                  label='one-stage baseline, random-init CLIP (control)'),
    },
    # ZegCLIP Tab. 4/5 in miniature: how CLIP is adapted, the loss, the query.
    'zegclip': {
        'frozen': dict(config='configs/zegclip_tiny_concepts-zs.py',
                       options={'model.backbone.num_prompt_tokens': 0},
                       label='frozen CLIP, no prompts'),
        'finetune': dict(config='configs/zegclip_tiny_concepts-zs.py',
                         options={'model.backbone.num_prompt_tokens': 0,
                                  'model.backbone.frozen': False,
                                  'optim_wrapper.paramwise_cfg': dict(custom_keys={
                                      'backbone': dict(lr_mult=0.1)})},
                         label='fine-tuned CLIP (lr x0.1), no prompts'),
        'vpt_deep': dict(config='configs/zegclip_tiny_concepts-zs.py',
                         label='frozen CLIP + deep prompt tuning (ZegCLIP)'),
        'ce': dict(config='configs/zegclip_tiny_concepts-zs.py',
                   options={'model.decode_head.loss_decode': CE_LOSS,
                            'model.score_act': 'softmax'},
                   label='deep prompts, CE (exclusive, softmax) loss'),
        'text_query': dict(config='configs/zegclip_tiny_concepts-zs.py',
                           options={'model.decode_head.query_type': 'text'},
                           label='deep prompts, focal+dice, text queries (no RD)'),
    },
    # SAN ablations: recognition with the attention bias vs without it (the mask as bias:
    # mask pooling through CLIP's attention) vs fine-tuning CLIP.
    'san': {
        'attn_bias': dict(config='configs/san_tiny_concepts.py',
                          label='frozen CLIP, attention bias (SAN)'),
        'mask_pool': dict(config='configs/san_tiny_concepts.py',
                          options={'model.decode_head.recognition': 'mask_pool'},
                          label='frozen CLIP, no attention bias (mask pooling)'),
        'finetune': dict(config='configs/san_tiny_concepts.py',
                         options={'model.backbone.frozen': False,
                                  'optim_wrapper.paramwise_cfg.custom_keys.backbone':
                                  dict(lr_mult=0.1)},
                         label='fine-tuned CLIP (lr x0.1), attention bias'),
    },
    # DenseCLIP Tab. 1 in miniature, closed set (all 55 classes labelled; the metric's mIoU is
    # over all classes): score map + context decoder + aux loss vs the same CLIP ViT with a
    # plain FPN, from the tiny CLIP vs from random init.
    'denseclip': {
        'denseclip': dict(config='configs/denseclip-vit_tiny_concepts.py',
                          label='DenseCLIP (score map + context decoder + aux), tiny CLIP'),
        'fpn': dict(config='configs/denseclip-vit_tiny_concepts-fpn.py',
                    label='plain FPN, tiny CLIP'),
        'denseclip_randclip': dict(config='configs/denseclip-vit_tiny_concepts-randclip.py',
                                   label='DenseCLIP, random-init CLIP (control)'),
        'fpn_randclip': dict(config='configs/denseclip-vit_tiny_concepts-fpn-randclip.py',
                             label='plain FPN, random-init CLIP (control)'),
    },
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--table', default='main', choices=sorted(TABLES))
    parser.add_argument('--rows', nargs='+', help='rows to run (default: all of the table)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    parser.add_argument('--out', default='work_dirs/open_vocab', help='work dirs + results')
    parser.add_argument('--threads', type=int, default=2, help='OMP threads per run')
    parser.add_argument('--max-iters', type=int, default=None, help='override every row')
    parser.add_argument('--force', action='store_true', help='re-run cached results')
    parser.add_argument('--report-only', action='store_true',
                        help='write the markdown from cached results, run nothing')
    parser.add_argument('--list', action='store_true', help='print the tables and exit')
    parser.add_argument('--clip-checkpoint', default=None,
                        help=f'use this tiny-CLIP checkpoint wherever a config loads '
                        f'{DEFAULT_CLIP} (random-CLIP rows stay random); use its own --out')
    parser.add_argument('--clip-preset', default=None,
                        help='use the checkpoint of this tools/pretrain_clip.py preset (e.g. '
                        'demo-2400), pretrained first when missing; use its own --out')
    parser.add_argument('--clip-logit-scale', type=float, default=None,
                        help='with --clip-checkpoint / --clip-preset: the temperature (ln) '
                        'for configs that set model.decode_head.logit_scale (SAN); default: '
                        'the checkpoint\'s own')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='KEY=VALUE overrides merged into every row after its own '
                        'options (e.g. optim_wrapper.optimizer.lr=1e-3); needs --tag')
    parser.add_argument('--tag', default=None,
                        help='name of this variant: results are cached under '
                        '<table>/<row>+<tag>/... so they never mix with the plain row')
    args = parser.parse_args(argv)
    if args.cfg_options and not args.tag:
        parser.error('--cfg-options needs --tag (the cache key of the variant)')
    if args.clip_preset:
        from mmseg_ovseg.clip.tiny import checkpoint_for_preset
        if args.clip_checkpoint:
            parser.error('--clip-preset and --clip-checkpoint name the checkpoint twice')
        try:
            args.clip_checkpoint = checkpoint_for_preset(args.clip_preset)
        except KeyError as err:
            parser.error(f'--clip-preset: {err.args[0]}')
    return args


DEFAULT_CLIP = 'work_dirs/tiny_clip/ovseg-tiny-clip.pt'


def _replace_value(node, old, new):
    """Every ``old`` string in a nested config dict/list replaced by ``new``."""
    if isinstance(node, dict):
        return {k: _replace_value(v, old, new) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_replace_value(v, old, new) for v in node)
    return new if node == old else node


def run_key(table: str, row: str, seed: int, max_iters, tag=None) -> str:
    row = f'{row}+{tag}' if tag else row
    return f'{table}/{row}/seed{seed}' + (f'/it{max_iters}' if max_iters else '')


def clip_digest(path: str):
    """SHA-256 (first 16 hex digits) of a CLIP checkpoint file; None if it does not exist.

    Runs are cached by table/row/seed and their configs name the CLIP by path, so a
    checkpoint replaced under the same path (the default one was, on 2026-11-30) would
    otherwise pass for the old one.
    """
    if not osp.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()[:16]


def check_clip(key: str, recorded: dict, clip: str, digest) -> None:
    """Refuse a cached run of another CLIP than the one ``clip`` holds now."""
    if 'clip_sha256' not in recorded:
        print(f'[{key}] cached before CLIP digests were recorded: not checked that it used '
              f'the {clip} of now', flush=True)
    elif recorded['clip_sha256'] != digest:
        raise SystemExit(
            f'[{key}] was run with the CLIP checkpoint {clip} of sha256 '
            f'{recorded["clip_sha256"]}, which now has {digest}: its result is of another '
            'CLIP. Use another --out (or --force to retrain it).')


def load_results(path: str) -> dict:
    if osp.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {}


def save_results(path: str, results: dict, key: str) -> None:
    """Add ``results[key]`` to the file, re-read first: drivers may run side by side."""
    current = load_results(path)
    current[key] = results[key]
    results.update(current)
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
        json.dump(current, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def final_metrics(work_dir: str) -> dict:
    """The last evaluation's metrics from mmengine's ``vis_data/scalars.json`` files."""
    found = None
    for stamp in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, stamp, 'vis_data', 'scalars.json')
        if not osp.isfile(path):
            continue
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if 'hIoU' in entry:
                    found = entry
    if found is None:
        raise RuntimeError(f'no evaluation result in {work_dir}/*/vis_data/scalars.json')
    return {k: found[k] for k in METRICS + ('mIoU', ) if k in found}


def build_config(spec: dict, seed: int, max_iters, load_from, work_dir: str,
                 clip_checkpoint=None, clip_logit_scale=None, extra_options=None) -> str:
    """Dump the row's resolved config into its work dir; returns the path."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, spec['config']))
    if clip_checkpoint:
        cfg = Config(_replace_value(cfg.to_dict(), DEFAULT_CLIP, clip_checkpoint))
        if (clip_logit_scale is not None and 'logit_scale' in cfg.model.get('decode_head', {})
                and cfg.model.backbone.get('pretrained') == clip_checkpoint):
            cfg.model.decode_head.logit_scale = clip_logit_scale
    options = dict(spec.get('options', {}))
    options.update(extra_options or {})
    options['randomness.seed'] = seed
    if load_from:
        options['load_from'] = load_from
    cfg.merge_from_dict(options)
    if max_iters:
        from mmseg_ovseg.utils.schedule import set_max_iters
        set_max_iters(cfg, max_iters)
        cfg.train_cfg.val_interval = max_iters
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, 'run_config.py')
    cfg.dump(path)
    return path


def train(key: str, config: str, work_dir: str, args, reuse: bool, clip: str, digest):
    """Train (and evaluate) one run with ``tools/train.py``; returns (wall s, CPU s).

    With ``reuse``, a run already finished in ``work_dir`` with this very config (e.g. by a
    driver stopped before it could record the result) is taken as it is.
    """
    finished = osp.join(work_dir, 'finished.json')
    if reuse and osp.isfile(finished):
        with open(finished) as f:
            timing = json.load(f)
        check_clip(key, timing, clip, digest)
        print(f'[{key}] already trained in {work_dir}', flush=True)
        return timing['wall_s'], timing['cpu_s']
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config, '--work-dir',
           work_dir]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f'[{key}] {" ".join(cmd)}', flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with open(osp.join(work_dir, 'train_stdout.log'), 'w') as log:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f'[{key}] training failed (exit {proc.returncode}); see '
                           f'{work_dir}/train_stdout.log')
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    with open(finished, 'w') as f:
        json.dump(dict(wall_s=wall, cpu_s=cpu, clip_sha256=digest), f)
    return wall, cpu


def run_one(table: str, row: str, seed: int, args, results: dict, results_path: str) -> dict:
    key = run_key(table, row, seed, args.max_iters, args.tag)
    clip = args.clip_checkpoint or DEFAULT_CLIP
    digest = clip_digest(clip)
    if key in results and not args.force:
        check_clip(key, results[key], clip, digest)
        return results[key]
    spec = TABLES[table][row]
    load_from = None
    if spec.get('needs'):
        dep = run_one(table, spec['needs'], seed, args, results, results_path)
        load_from = dep['checkpoint']
    work_dir = osp.join(args.out, key)
    previous = None
    if osp.isfile(osp.join(work_dir, 'run_config.py')):
        with open(osp.join(work_dir, 'run_config.py')) as f:
            previous = f.read()
    config = build_config(spec, seed, args.max_iters, load_from, work_dir,
                          args.clip_checkpoint, args.clip_logit_scale, args.cfg_options)
    with open(config) as f:
        same_config = f.read() == previous
    from mmengine.config import Config
    iters = Config.fromfile(config).train_cfg.max_iters
    wall, cpu = train(key, config, work_dir, args, reuse=same_config and not args.force,
                      clip=clip, digest=digest)
    entry = dict(final_metrics(work_dir), table=table, row=row, seed=seed, iters=iters,
                 config=spec['config'], options={k: repr(v) for k, v in
                                                 spec.get('options', {}).items()},
                 tag=args.tag, cfg_options={k: repr(v) for k, v in args.cfg_options.items()},
                 checkpoint=osp.join(work_dir, f'iter_{iters}.pth'), wall_s=round(wall, 1),
                 cpu_s=round(cpu, 1),
                 threads=args.threads, load_from=load_from,
                 clip_checkpoint=clip, clip_sha256=digest)
    results[key] = entry
    save_results(results_path, results, key)
    print(f'[{key}] ' + '  '.join(f'{m} {entry[m]:.2f}' for m in METRICS if m in entry)
          + f'  (wall {wall:.0f}s, cpu {entry["cpu_s"]:.0f}s)', flush=True)
    return entry


def _mean_std(values: List[float]) -> str:
    import numpy as np
    v = np.asarray(values, np.float64)
    if len(v) == 1:
        return f'{v[0]:.1f}'
    return f'{v.mean():.1f} ± {v.std(ddof=1):.1f}'


def command_options(args) -> str:
    """The options besides --table/--rows/--seeds that select the cached runs."""
    opts = []
    if args.clip_preset:
        opts.append(f'--clip-preset {args.clip_preset}')
    elif args.clip_checkpoint:
        opts.append(f'--clip-checkpoint {args.clip_checkpoint}')
    if args.max_iters:
        opts.append(f'--max-iters {args.max_iters}')
    if args.tag:
        opts.append(f'--tag {args.tag}')
    if args.cfg_options:
        opts.append('--cfg-options ' + ' '.join(shlex.quote(f'{k}={v!r}') for k, v in
                                                args.cfg_options.items()))
    return ''.join(' ' + o for o in opts)


def markdown(table: str, results: dict, seeds, max_iters, tag=None, options='') -> str:
    lines = [f'| {table} row | mIoU(S) | mIoU(U) | hIoU | pAcc | seeds: (S / U / h) | '
             'command |', '|---|---|---|---|---|---|---|']
    for row, spec in TABLES[table].items():
        runs = [results.get(run_key(table, row, s, max_iters, tag)) for s in seeds]
        runs = [r for r in runs if r]
        cmd = (f'`python tools/misc/run_open_vocab_ablations.py --table {table} --rows {row} '
               f'--seeds {" ".join(map(str, seeds))}{options}`')
        if not runs:
            lines.append(f'| {spec["label"]} | pending | pending | pending | pending | | {cmd} |')
            continue
        cols = [_mean_std([r[m] for r in runs]) for m in ('mIoU_seen', 'mIoU_unseen', 'hIoU',
                                                           'pAcc')]
        per_seed = '; '.join(f's{r["seed"]}: {r["mIoU_seen"]:.1f} / {r["mIoU_unseen"]:.1f} / '
                             f'{r["hIoU"]:.1f}' for r in runs)
        lines.append(f'| {spec["label"]} | ' + ' | '.join(cols) + f' | {per_seed} | {cmd} |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for table, rows in TABLES.items():
            print(f'{table}:')
            for row, spec in rows.items():
                print(f'  {row:18s} {spec["config"]} {spec.get("options", "")}')
        return
    os.chdir(REPO_ROOT)
    os.makedirs(args.out, exist_ok=True)
    results_path = osp.join(args.out, 'results.json')
    results = load_results(results_path)
    rows = args.rows or list(TABLES[args.table])
    unknown = [r for r in rows if r not in TABLES[args.table]]
    if unknown:
        raise SystemExit(f'unknown rows {unknown} of table {args.table!r}; known: '
                         f'{list(TABLES[args.table])}')
    if (args.clip_checkpoint and not args.clip_preset
            and not osp.isfile(args.clip_checkpoint)):
        raise SystemExit(f'--clip-checkpoint {args.clip_checkpoint} does not exist')
    if not args.report_only:
        import mmseg_ovseg  # noqa: F401
        from mmseg_ovseg.clip.tiny import ensure_tiny_clip
        from mmseg_ovseg.datasets.concept_seg import generate_concept_dataset
        generate_concept_dataset('data/concepts')
        # Only the CLIP the rows load: --clip-checkpoint replaces the default everywhere, so
        # the default is pretrained only when it is used (a given file already exists).
        if args.clip_preset or not args.clip_checkpoint:
            ensure_tiny_clip(args.clip_checkpoint or DEFAULT_CLIP,
                             preset=args.clip_preset or 'demo', threads=args.threads)
        if args.clip_checkpoint and args.clip_logit_scale is None:
            from mmseg_ovseg.clip.tiny import read_logit_scale

            # 4 decimals, as probe_tiny_clip.py prints it (and the dumped configs show it)
            args.clip_logit_scale = round(read_logit_scale(args.clip_checkpoint), 4)
            print(f'{args.clip_checkpoint}: logit scale (ln) {args.clip_logit_scale}')
        for row in rows:
            for seed in args.seeds:
                run_one(args.table, row, seed, args, results, results_path)
    text = markdown(args.table, results, args.seeds, args.max_iters, args.tag,
                    command_options(args))
    with open(osp.join(args.out, f'{args.table}.md'), 'w') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    main()
