"""Measure what a tiny-CLIP checkpoint recognises: whole images, object regions, patches.

    python tools/misc/probe_tiny_clip.py work_dirs/tiny_clip/ovseg-tiny-clip.pt
    python tools/misc/probe_tiny_clip.py CKPT --model ovseg-tiny-clip --num-val 60 --json out.json

Every measurement is CLIP zero-shot classification with the prompt "a photo of a {}." (the
template the segmentation configs use), embeddings L2-normalised, argmax of the cosine:

1. ``zero_shot``: top-1 over all 70 concepts on held-out single-object images
   (``evaluate_concepts``: seed 1, 4 per class, what ``tools/pretrain_clip.py`` reports) and
   on a larger set (``--zs-seed 2``, ``--zs-per-class 16``: 1,120 images).
2. ``single_54``: the same larger set restricted to the 54 object classes of the concept
   segmentation benchmark, classified among those 54 names.
3. On the first ``--num-val`` images of the benchmark's val split (``data/concepts``, written
   if missing), among the 54 object names, for each object class present in an image
   (its pixels' bounding box; >= ``--min-pixels`` pixels):

   - ``crop_tight``: the square crop around the box (side = the box's longer side, shifted
     into the image), resized to the CLIP input size, CLS embedding.
   - ``crop_context``: the same with side = longer side / 0.6 (the object fills ~60 % of the
     crop, as in the single-object pretraining images).
   - ``region_pool``: the whole image at CLIP input size (128 -> 64 px: ``clip_scale=0.5``
     of the configs); the patch embeddings (``ln_post`` + ``proj``, the MaskCLIP/ZegCLIP
     dense embedding) averaged over the object's mask (weights: coverage of each patch).
   - ``patch``: the same patch embeddings, each patch whose area is >= 50 % one object
     classified on its own (what ZegCLIP / the one-stage baseline match against text).
   - ``sls_mask``: SAN's recognition path with the object's ground-truth mask as the
     attention bias: an SLS token (a copy of CLS at block ``--sls-split``, the configs'
     ``split_layer``) runs the remaining blocks attending only to the patches the object
     covers by >= 25 % (and itself); ``ln_post`` + ``proj``. An upper bound of what SAN's
     side adapter can get out of the frozen CLIP with perfect masks.

   Each of these is also reported for the objects of the ``'concepts'`` split's 9 unseen
   classes alone (``<key>_unseen``).

Also reported: the checkpoint's temperature ``logit_scale`` (ln; SAN's ``logit_scale`` option
of ``configs/san_tiny_concepts.py`` is this number for the checkpoint it loads).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import open_clip  # noqa: E402

from mmseg_ovseg.clip.builder import create_clip  # noqa: E402
from mmseg_ovseg.clip.region_losses import (  # noqa: E402
    cover_masks,
    patch_cover,
    patch_embeddings,
    sls_embeddings,
    sls_tower,
)
from mmseg_ovseg.clip.tiny import (  # noqa: E402
    TINY_CLIP_NAME,
    ZERO_SHOT_TEMPLATE,
    evaluate_concepts,
    register_model_configs,
    zero_shot_accuracy,
)
from mmseg_ovseg.clip.vocabularies import get_zero_shot_split  # noqa: E402
from mmseg_ovseg.datasets.captions import to_tensor, zero_shot_samples  # noqa: E402
from mmseg_ovseg.datasets.concept_seg import (  # noqa: E402
    CONCEPT_INDEX,
    CONCEPT_SEG_CLASSES,
    generate_concept_dataset,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('checkpoint', help='open_clip state dict (tools/pretrain_clip.py output)')
    p.add_argument('--model', default=TINY_CLIP_NAME, help='registered open_clip model name')
    p.add_argument('--data-root', default='data/concepts', help='concept benchmark')
    p.add_argument('--num-val', type=int, default=60, help='val images for the region probe')
    p.add_argument('--min-pixels', type=int, default=16,
                   help='smallest object (pixels of the 128 px image) probed')
    p.add_argument('--zs-seed', type=int, default=2, help='seed of the larger zero-shot set')
    p.add_argument('--zs-per-class', type=int, default=16, help='its images per class')
    p.add_argument('--sls-split', type=int, default=1,
                   help='first block of the SLS path (split_layer of the SAN configs)')
    p.add_argument('--threads', type=int, default=1, help='torch threads')
    p.add_argument('--json', default=None, help='also write the results here')
    return p.parse_args(argv)


def load_clip(checkpoint: str, model_name: str) -> torch.nn.Module:
    """The open_clip ``CLIP`` of ``model_name`` with ``checkpoint`` loaded strictly
    (:func:`~mmseg_ovseg.clip.builder.create_clip`: keys that do not fit are listed)."""
    register_model_configs()
    return create_clip(model_name, checkpoint).eval()


def _input_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _patch_size(model) -> int:
    size = model.visual.patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    return np.array(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def _square_crop(img: np.ndarray, box, side: int) -> np.ndarray:
    """Square crop of ``side`` pixels centred on ``box`` (x0, y0, x1, y1), shifted inside the
    image (and cut to it when larger than the image)."""
    h, w = img.shape[:2]
    side = int(min(max(side, 4), h, w))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    return img[y0:y0 + side, x0:x0 + side]


class _Acc:

    def __init__(self):
        self.correct = self.total = 0

    def add(self, pred: torch.Tensor, target: torch.Tensor, keep=None):
        if keep is not None:
            pred, target = pred[keep], target[keep]
        self.correct += int((pred == target).sum())
        self.total += int(target.numel())

    def result(self) -> dict:
        return dict(top1=100.0 * self.correct / max(1, self.total), num=self.total)


@torch.no_grad()
def _object_crops(img: np.ndarray, ann: np.ndarray, classes, size: int):
    """Tight and context square crops (module docstring) of each class's box, as tensors."""
    tight, context = [], []
    for c in classes:
        ys, xs = np.nonzero(ann == c)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        longer = max(box[2] - box[0], box[3] - box[1])
        tight.append(to_tensor(_resize(_square_crop(img, box, longer), size)))
        context.append(to_tensor(_resize(_square_crop(img, box, longer / 0.6), size)))
    return tight, context


def region_probe(model, tokenizer, data_root: str, num_val: int, min_pixels: int,
                 sls_split: int = 1, model_name: str = TINY_CLIP_NAME) -> dict:
    """Crop / region-pool / patch classification among the 54 benchmark object names on the
    first ``num_val`` val images (module docstring)."""
    names = CONCEPT_SEG_CLASSES[1:]
    text = F.normalize(model.encode_text(
        tokenizer([ZERO_SHOT_TEMPLATE.format(n) for n in names])), dim=-1)
    size, patch = _input_size(model), _patch_size(model)
    img_dir = osp.join(data_root, 'img_dir', 'val')
    ann_dir = osp.join(data_root, 'ann_dir', 'val')
    files = sorted(f for f in os.listdir(img_dir) if f.endswith('.png'))[:num_val]
    if len(files) < num_val:
        raise ValueError(f'{img_dir} has {len(files)} images, --num-val asks {num_val}')
    keys = ('crop_tight', 'crop_context', 'region_pool', 'patch', 'sls_mask')
    accs = {k + g: _Acc() for k in keys for g in ('', '_unseen')}
    _, unseen = get_zero_shot_split('concepts', len(CONCEPT_SEG_CLASSES))
    unseen = torch.tensor([u - 1 for u in unseen])  # object indices (no background)

    def add(key, pred, target):
        accs[key].add(pred, target)
        accs[key + '_unseen'].add(pred, target, torch.isin(target, unseen))

    tower = sls_tower(model, model_name).eval()
    visual = model.visual
    for f in files:
        img = np.asarray(Image.open(osp.join(img_dir, f)).convert('RGB'))
        ann = np.asarray(Image.open(osp.join(ann_dir, f)))
        if img.shape[:2] != ann.shape:
            raise ValueError(f'{f}: image {img.shape[:2]} and label {ann.shape} differ')
        # whole image at the CLIP input size; label map resized the same way (nearest)
        small = _resize(img, size)
        small_ann = np.asarray(Image.fromarray(ann).resize((size, size), Image.NEAREST))
        dense = F.normalize(patch_embeddings(visual, to_tensor(small)[None])[1][0],
                            dim=-1)  # (P, E)
        cover = patch_cover(small_ann[None], patch, len(CONCEPT_SEG_CLASSES))[0, 1:]  # (54, P)
        present = [c for c in np.unique(ann) if c != 0 and (ann == c).sum() >= min_pixels]
        crops_t, crops_c = _object_crops(img, ann, present, size)
        targets = [int(c) - 1 for c in present]
        for c in present:
            w = cover[int(c) - 1]
            if w.sum() > 0:
                pooled = F.normalize((w[:, None] * dense).sum(0), dim=-1)
                add('region_pool', (pooled @ text.t()).argmax()[None],
                    torch.tensor([int(c) - 1]))
        if targets:
            target = torch.tensor(targets)
            for key, crops in (('crop_tight', crops_t), ('crop_context', crops_c)):
                feats = F.normalize(model.encode_image(torch.stack(crops)), dim=-1)
                add(key, (feats @ text.t()).argmax(-1), target)
            masks = cover_masks(cover[target])
            sls = F.normalize(sls_embeddings(tower, to_tensor(small)[None], masks[None],
                                             sls_split)[0][0], dim=-1)
            add('sls_mask', (sls @ text.t()).argmax(-1), target)
        best, label = cover.max(0)
        keep = best >= 0.5
        if keep.any():
            add('patch', (dense[keep] @ text.t()).argmax(-1), label[keep])
    return {k: v.result() for k, v in accs.items()}


def probe(checkpoint: str, model_name: str = TINY_CLIP_NAME, data_root: str = 'data/concepts',
          num_val: int = 60, min_pixels: int = 16, zs_seed: int = 2,
          zs_per_class: int = 16, sls_split: int = 1) -> dict:
    """All measurements of the module docstring for one checkpoint (dict of percentages)."""
    model = load_clip(checkpoint, model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    out = dict(checkpoint=checkpoint, model=model_name,
               logit_scale=float(model.logit_scale.detach()))
    with torch.no_grad():
        small = evaluate_concepts(model, model_name, seed=1, per_class=4)
        out['zero_shot_70_seed1'] = dict(top1=small['top1'], num=small['num_images'])
        big = evaluate_concepts(model, model_name, seed=zs_seed, per_class=zs_per_class)
        out[f'zero_shot_70_seed{zs_seed}'] = dict(top1=big['top1'], num=big['num_images'])
        out['zero_shot_70_weakest'] = sorted(big['per_class'].items(), key=lambda kv: kv[1])[:8]
        images, labels = zero_shot_samples(seed=zs_seed, per_class=zs_per_class,
                                           size=_input_size(model), classes=CONCEPT_INDEX[1:])
        single = zero_shot_accuracy(model, tokenizer, images, labels, CONCEPT_SEG_CLASSES[1:],
                                    class_ids=CONCEPT_INDEX[1:])
        out['single_54'] = dict(top1=single['top1'], num=single['num_images'])
    generate_concept_dataset(data_root)
    out.update(region_probe(model, tokenizer, data_root, num_val, min_pixels, sls_split,
                            model_name))
    return out


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.process_time()
    res = probe(args.checkpoint, args.model, args.data_root, args.num_val, args.min_pixels,
                args.zs_seed, args.zs_per_class, args.sls_split)
    res['cpu_s'] = time.process_time() - t0
    zs = f'zero_shot_70_seed{args.zs_seed}'
    print(f'{args.checkpoint} ({args.model}), logit_scale (ln) {res["logit_scale"]:.4f}')
    print(f'zero-shot top-1, 70 concepts: {res["zero_shot_70_seed1"]["top1"]:.1f}% '
          f'({res["zero_shot_70_seed1"]["num"]} images, seed 1); {res[zs]["top1"]:.1f}% '
          f'({res[zs]["num"]} images, seed {args.zs_seed})')
    print('weakest: ' + ', '.join(f'{n} {a:.0f}%' for n, a in res['zero_shot_70_weakest']))
    print(f'single-object images among the 54 benchmark names: {res["single_54"]["top1"]:.1f}%'
          f' ({res["single_54"]["num"]})')
    for key in ('crop_tight', 'crop_context', 'region_pool', 'patch', 'sls_mask'):
        u = res[key + '_unseen']
        print(f'{key:>12} (first {args.num_val} val images, 54 names): '
              f'{res[key]["top1"]:.1f}% of {res[key]["num"]}; unseen classes '
              f'{u["top1"]:.1f}% of {u["num"]}')
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(res, args=vars(args)), f, indent=2)
    return res


if __name__ == '__main__':
    main()
