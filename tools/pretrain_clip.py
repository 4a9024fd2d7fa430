"""Pretrain the in-package tiny CLIP ('ovseg-tiny-clip') on generated image-caption pairs.

    python tools/pretrain_clip.py                       # defaults: docs/tiny_clip.md
    python tools/pretrain_clip.py --resume              # continue an interrupted run
    python tools/pretrain_clip.py --steps 2000 --out work_dirs/tiny_clip/long.pt
    python tools/pretrain_clip.py --preset region --out work_dirs/tiny_clip_v2/region.pt
    python tools/pretrain_clip.py --preset demo-2400   # the tables' CLIP, ~20 min on 1 core

Contrastive training with open_clip's tokenizer and ``ClipLoss``, AdamW with a warmup +
cosine schedule, a progress bar with the ETA. Writes a plain open_clip state dict (``--out``,
default ``work_dirs/tiny_clip/ovseg-tiny-clip.pt`` for the demo preset and
``work_dirs/tiny_clip/ovseg-tiny-clip-<preset>.pt`` for the others) that
``CLIPVisionTransformer`` and ``OVCLIPTextEncoder`` load with ``clip_model='ovseg-tiny-clip',
pretrained=<path>``, and reports CLIP zero-shot classification top-1 over all concept classes
on held-out images. The training state (``<out>.train_state.pth``, written atomically) makes
``--resume`` exact.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmseg_ovseg.clip.tiny import PRETRAIN_DEFAULTS, PRETRAIN_PRESETS, checkpoint_for_preset  # noqa: E402
from mmseg_ovseg.clip.tiny_pretrain import pretrain  # noqa: E402


def parse_args(argv=None):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--preset', choices=sorted(PRETRAIN_PRESETS), default='demo')
    preset = pre.parse_known_args(argv)[0].preset
    d = dict(PRETRAIN_DEFAULTS, **PRETRAIN_PRESETS[preset])
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', choices=sorted(PRETRAIN_PRESETS), default='demo',
                   help='named recipe whose settings become the defaults of the options '
                   'below (demo: the make-demo default; docs/tiny_clip.md)')
    p.add_argument('--out', default=checkpoint_for_preset(preset),
                   help='checkpoint to write (default: the preset\'s cache path, '
                   'tiny.checkpoint_for_preset)')
    p.add_argument('--model', default=d['model'], help='registered open_clip model name')
    p.add_argument('--steps', type=int, default=d['steps'], help='optimizer steps')
    p.add_argument('--batch-size', type=int, default=d['batch_size'], help='pairs per step')
    p.add_argument('--lr', type=float, default=d['lr'], help='peak learning rate')
    p.add_argument('--warmup', type=int, default=d['warmup'], help='linear warmup steps')
    p.add_argument('--weight-decay', type=float, default=d['weight_decay'])
    p.add_argument('--seed', type=int, default=d['seed'], help='data and init seed')
    p.add_argument('--init', default=d['init'],
                   help='start from this checkpoint (open_clip state dict) instead of random')
    p.add_argument('--dense-weight', type=float, default=d['dense_weight'],
                   help='weight of the region-text loss on the patch tokens (0: plain CLIP)')
    p.add_argument('--sls-weight', type=float, default=d['sls_weight'],
                   help='weight of the region-text loss on SAN\'s SLS path (0: none)')
    p.add_argument('--sls-split', type=int, default=d['sls_split'],
                   help='first block of the SLS path (SAN\'s split_layer)')
    p.add_argument('--region-exclude', default=d['region_exclude'],
                   help='zero-shot split whose unseen classes get no region supervision '
                   '(e.g. concepts; default: none)')
    p.add_argument('--region-start', type=float, default=d['region_start'],
                   help='fraction of the schedule after which the region terms are on '
                   '(0: from the first step)')
    p.add_argument('--eval-per-class', type=int, default=d['eval_per_class'],
                   help='held-out zero-shot images per class')
    p.add_argument('--eval-every', type=int, default=0,
                   help='also report zero-shot top-1 every N steps (not counted in the time)')
    p.add_argument('--save-every', type=int, default=d['save_every'],
                   help='write the training state every N steps')
    p.add_argument('--threads', type=int, default=None,
                   help='torch threads (default: torch\'s, i.e. OMP_NUM_THREADS or the cores)')
    p.add_argument('--resume', action='store_true',
                   help='continue from <out>.train_state.pth if it exists')
    p.add_argument('--captions', type=json.loads, default=None,
                   help='JSON dict of CaptionGenerator settings, e.g. '
                   '\'{"num_objects_probs": [0.5, 0.2, 0.2, 0.1]}\'')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.steps < 1 or args.batch_size < 2:
        raise SystemExit('--steps must be >= 1 and --batch-size >= 2 (contrastive loss)')
    result = pretrain(
        out=args.out, resume=args.resume, captions=args.captions, threads=args.threads,
        progress=not args.no_progress, eval_every=args.eval_every, model=args.model,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, seed=args.seed, eval_per_class=args.eval_per_class,
        save_every=args.save_every, dense_weight=args.dense_weight, init=args.init,
        sls_weight=args.sls_weight, sls_split=args.sls_split,
        region_exclude=args.region_exclude, region_start=args.region_start)
    zs = result['zero_shot']
    worst = sorted(zs['per_class'].items(), key=lambda kv: kv[1])[:5]
    print('weakest classes: ' + ', '.join(f'{n} {a:.0f}%' for n, a in worst))
    print('most frequent confusions (true -> predicted): ' + ', '.join(
        f'{t} -> {p} ({k})' for (t, p), k in zs['confusions'][:5]))
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(result, args=vars(args)), f, indent=2)
    return result


if __name__ == '__main__':
    main()
