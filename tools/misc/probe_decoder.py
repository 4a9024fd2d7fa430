"""Where a trained ZegCLIP / one-stage baseline run of the concept benchmark fails: a probe of
its class logits at patch resolution (docs/open_vocab_record.md, "Where the decoder fails").

On the first ``num`` val images of ``data/concepts`` (128 px; with the tiny CLIP's 8 px
patches a 16 x 16 grid), with a run's config (``run_config.py``, or the one
``tools/train.py`` dumps) and last ``iter_*.pth`` (loaded by
``san_oracle_eval.load_run``; the checkpoint holds the whole model, backbone and text encoder
included, and must cover every tensor of the model -- the config's ``pretrained=`` CLIP is
never loaded, since ``init_weights`` is not called):

- class logits ``(C, h, w)``: the decode head's own ``forward`` on ``extract_feat`` (ZegCLIP's
  last-layer mask logits, the baseline's ``PatchTextHead`` cosine logits), raw: no sigmoid,
  no seen calibration, all 55 classes (ZegCLIP in eval mode scores all of them);
- raw CLIP logits: the backbone's dense embeddings (the head's input, ``feats[in_index]``,
  with the run's trained prompts where it has them) x the run's text embeddings, zero-shot;
- object patches: patches whose ground truth is >= 50 % one non-background class (the
  one-hot labels average-pooled to the grid), that class being the patch's majority: a
  50 / 50 tie with background counts as background; their true class is that class.

The columns of docs/open_vocab_record.md's table are ``called_object``, ``identity_top1``,
``colour_right``, ``shape_right``, ``raw_clip_identity``, ``classes_predicted_patch`` and
``class_map_corr`` (this tool reproduces the figures listed there for the checkpoints that
still exist). ``never_predicted`` lists the classes that win no patch.

Figures (per cent unless a count):

- ``object_patches``: how many;
- ``called_object``: object patches whose argmax over all classes is not background;
- ``identity_top1``: object patches whose argmax over the 54 object classes is the true class;
- ``colour_right`` / ``shape_right``: over the object patches of the 48 ``'<colour> <shape>'``
  compositions (``composition_patches``; an object kind -- house, tree, car, face, flower,
  fish -- has no colour or shape, so its patches are left out), those whose predicted object
  class (argmax over the 54) has the true class's colour / shape; a predicted object kind
  has neither, so it is wrong on both. ``colour_right_all`` / ``shape_right_all``: over all
  object patches, an object kind counting as its own colour and its own shape (right only
  when that same kind is predicted);
- ``raw_clip_identity``: ``identity_top1`` of the raw CLIP logits;
- ``classes_predicted_patch`` / ``classes_predicted_pixel``: classes (of all 55, background
  included) that win the argmax on some patch of the grid / some pixel after the bilinear
  upsampling to the image (the model's inference resize), over the ``num`` images;
- ``class_map_corr``: per image, the Pearson correlation of every pair of the 55 classes'
  ``h x w`` logit maps, averaged over pairs (pairs with a constant map left out), then over
  images; ``class_map_corr_objects`` the same over the 54 object classes.

::

    python tools/misc/probe_decoder.py WORK_DIR [WORK_DIR ...] [--num 60] [--threads 1] \
        [--json OUT]
"""
import argparse
import json
import os.path as osp
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from san_oracle_eval import REPO_ROOT, load_run, val_images  # noqa: E402

OBJECT_SHARE = 0.5  # a patch is an object patch when one object class covers >= this share
FIGURES = ('object_patches', 'called_object', 'identity_top1', 'colour_right', 'shape_right',
           'raw_clip_identity', 'classes_predicted_patch', 'classes_predicted_pixel',
           'class_map_corr')


def class_attributes(vocabulary):
    """``(colour, shape)`` of every class name: ``'<colour> <shape>'`` compositions split by
    the concept vocabulary's colour and shape names, an object kind is its own colour and its
    own shape (see the module docstring), background ``(None, None)``.

    Raises:
        ValueError: a name that is neither background, a composition nor an object kind.
    """
    from mmseg_ovseg.datasets.concept_seg import SEG_SHAPES
    from mmseg_ovseg.datasets.concepts import COLOR_NAMES, OBJECT_NAMES
    out = []
    for name in vocabulary:
        parts = name.split()
        if name == 'background':
            out.append((None, None))
        elif name in OBJECT_NAMES:
            out.append((name, name))
        elif len(parts) == 2 and parts[0] in COLOR_NAMES and parts[1] in SEG_SHAPES:
            out.append((parts[0], parts[1]))
        else:
            raise ValueError(f'probe_decoder: class {name!r} is not background, a '
                             "'<colour> <shape>' composition or an object kind of the "
                             'concept vocabulary')
    return out


def object_patches(gt: np.ndarray, num_classes: int, grid) -> tuple:
    """Object patches of labels ``(H, W)`` on a ``grid = (h, w)``: ``(mask (h, w) bool,
    true class (h, w) long)`` -- patches whose majority class (ties to the lower index, so to
    background) is not background and covers >= :data:`OBJECT_SHARE` of the patch."""
    onehot = F.one_hot(torch.from_numpy(gt).long(), num_classes).permute(2, 0, 1).float()
    share = F.adaptive_avg_pool2d(onehot[None], grid)[0]  # (C, h, w)
    # The majority class over all classes: a 50 / 50 tie with background is background
    # (argmax takes the first), as in the probe whose figures docs/open_vocab_record.md lists.
    best, cls = share.max(0)
    return (best >= OBJECT_SHARE) & (cls != 0), cls


def map_correlation(logits: torch.Tensor) -> float:
    """Mean Pearson correlation over all pairs of the ``(C, h, w)`` maps (constant maps left
    out); NaN when fewer than two maps vary."""
    m = logits.flatten(1).double()
    m = m - m.mean(1, keepdim=True)
    norm = m.norm(dim=1)
    m = m[norm > 1e-12 * max(float(norm.max()), 1.0)]
    if m.shape[0] < 2:
        return float('nan')
    m = m / m.norm(dim=1, keepdim=True)
    corr = m @ m.T
    iu = torch.triu_indices(len(m), len(m), 1)
    return float(corr[iu[0], iu[1]].mean())


class DecoderProbe:
    """Accumulates the probe's counts over images (see the module docstring)."""

    def __init__(self, vocabulary):
        self.C = len(vocabulary)
        if vocabulary[0] != 'background':
            raise ValueError(f"probe_decoder: class 0 must be 'background', got "
                             f'{vocabulary[0]!r}')
        attrs = class_attributes(vocabulary)
        self.colour = [a[0] for a in attrs]
        self.shape = [a[1] for a in attrs]
        self.composition = torch.tensor([a[0] is not None and a[0] != a[1] for a in attrs])
        self.n = dict(patches=0, compositions=0, called=0, identity=0, colour=0, shape=0,
                      colour_all=0, shape_all=0, raw=0)
        self.pred_patch = np.zeros(self.C, bool)
        self.pred_pixel = np.zeros(self.C, bool)
        self.corr, self.corr_obj = [], []
        self.images = 0

    def add(self, logits: torch.Tensor, raw: torch.Tensor, gt: np.ndarray) -> None:
        """One image: class logits and raw CLIP logits ``(C, h, w)``, labels ``(H, W)``."""
        if logits.dim() != 3 or logits.shape[0] != self.C or raw.shape != logits.shape:
            raise ValueError(f'probe_decoder: logits must be ({self.C}, h, w) and raw CLIP '
                             f'logits the same, got {tuple(logits.shape)} and '
                             f'{tuple(raw.shape)}')
        logits, raw = logits.float(), raw.float()
        obj, true = object_patches(gt, self.C, logits.shape[-2:])
        true = true[obj]  # (N,)
        full = logits.argmax(0)
        top_obj = logits[1:].argmax(0)[obj] + 1
        raw_obj = raw[1:].argmax(0)[obj] + 1
        comp = self.composition[true]
        col = torch.tensor([self.colour[p] == self.colour[t]
                            for p, t in zip(top_obj.tolist(), true.tolist())], dtype=torch.bool)
        shp = torch.tensor([self.shape[p] == self.shape[t]
                            for p, t in zip(top_obj.tolist(), true.tolist())], dtype=torch.bool)
        n = self.n
        n['patches'] += int(obj.sum())
        n['compositions'] += int(comp.sum())
        n['called'] += int((full[obj] != 0).sum())
        n['identity'] += int((top_obj == true).sum())
        n['raw'] += int((raw_obj == true).sum())
        n['colour_all'] += int(col.sum())
        n['shape_all'] += int(shp.sum())
        n['colour'] += int((col & comp).sum())
        n['shape'] += int((shp & comp).sum())
        self.pred_patch[full.unique().numpy()] = True
        up = F.interpolate(logits[None], gt.shape, mode='bilinear', align_corners=False)[0]
        self.pred_pixel[up.argmax(0).unique().numpy()] = True
        self.corr.append(map_correlation(logits))
        self.corr_obj.append(map_correlation(logits[1:]))
        self.images += 1

    def summary(self, vocabulary) -> dict:
        n = self.n

        def pct(k, d='patches'):
            return round(100 * n[k] / n[d], 1) if n[d] else float('nan')

        def mean(v):
            v = [x for x in v if x == x]
            return round(float(np.mean(v)), 3) if v else float('nan')

        return dict(
            images=self.images, object_patches=n['patches'], called_object=pct('called'),
            identity_top1=pct('identity'), composition_patches=n['compositions'],
            colour_right=pct('colour', 'compositions'),
            shape_right=pct('shape', 'compositions'), raw_clip_identity=pct('raw'),
            classes_predicted_patch=int(self.pred_patch.sum()),
            classes_predicted_pixel=int(self.pred_pixel.sum()),
            class_map_corr=mean(self.corr), class_map_corr_objects=mean(self.corr_obj),
            colour_right_all=pct('colour_all'), shape_right_all=pct('shape_all'),
            never_predicted=[vocabulary[c] for c in range(self.C) if not self.pred_patch[c]])


def patch_logits(model, x: torch.Tensor) -> tuple:
    """The model's class logits and the raw CLIP logits ``(B, C, h, w)`` of a normalised
    batch ``x (B, 3, H, W)``: the decode head's ``forward`` on ``extract_feat`` and its dense
    input embeddings x the text embeddings."""
    feats = model.extract_feat(x)
    logits = model.decode_head.forward(feats)
    dense = feats['feats'][model.decode_head.in_index]
    if dense.dim() != 4 or dense.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f'probe_decoder: feats[{model.decode_head.in_index}] must be dense '
                         f'embeddings on the logits grid {tuple(logits.shape[-2:])}, got '
                         f'{tuple(dense.shape)}')
    text = feats['class_embeds']
    raw = torch.einsum('bdhw,cd->bchw', F.normalize(dense, dim=1), text.to(dense))
    return logits, raw


def probe(work_dir: str, num: int = 60,
          data_root: str = osp.join(REPO_ROOT, 'data/concepts')) -> dict:
    """The probe on a trained work dir (see the module docstring)."""
    model, cfg, ckpt = load_run(work_dir)  # refuses a checkpoint missing a model tensor
    acc = DecoderProbe(model.vocabulary)
    with torch.no_grad():
        for x, gt in val_images(cfg, data_root, num):
            logits, raw = patch_logits(model, x)
            acc.add(logits[0], raw[0], gt)
    out = dict(work_dir=work_dir, checkpoint=ckpt, segmentor=type(model).__name__)
    out.update(acc.summary(model.vocabulary))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--num', type=int, default=60, help='val images')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--json', help='write the results (a list, one per work dir) here')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for work_dir in args.work_dirs:
        r = probe(work_dir, args.num)
        results.append(r)
        print(f"[probe] {work_dir} ({r['segmentor']}, {r['images']} images, "
              f"{r['object_patches']} object patches): called object {r['called_object']}, "
              f"identity {r['identity_top1']}, colour {r['colour_right']}, shape "
              f"{r['shape_right']}, raw CLIP {r['raw_clip_identity']}, classes predicted "
              f"{r['classes_predicted_patch']} (patch) / {r['classes_predicted_pixel']} "
              f"(pixel), class-map corr. {r['class_map_corr']} "
              f"({r['class_map_corr_objects']} objects only)", flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
