"""Where a trained SAN run of the concept benchmark loses its IoU: oracle evaluations.

On the first ``num`` val images of ``data/concepts``, with a run's config and last
checkpoint (a work dir of ``tools/misc/run_open_vocab_ablations.py`` with its ``run_config.py``,
or of ``tools/train.py`` with the config it dumps there):

- ``normal``: the model's own prediction (Eq. 4; equals the run's evaluation);
- ``oracle_cls``: the model's masks, each query named by the ground-truth class under most of
  its (sigmoid) mask mass -- mask quality is the only error left;
- ``oracle_mask``: each ground-truth object as SAN's attention bias (0 on the CLIP patches it
  covers by >= 25 % and on its most covered one, -100 elsewhere; the probe's ``sls_mask``),
  named by the model's SLS recognition among the 55 names; background pixels given --
  recognition is the only error left;
- ``own_mask_bias`` / ``own_mask_logsig``: at inference only, the bias decoder's bias replaced
  by the model's own masks (hard as above / ``log sigmoid``);
- ``calib<l>``: ZegCLIP's seen calibration, ``l`` subtracted from the seen objects' class
  logits.

Also: naming accuracy of the objects with oracle masks, and of the query whose binarised mask
overlaps each object best (with that mask's mean IoU). ``--reset-pos`` puts the CLIP position
embedding (trained by SAN) back to the pretrained one. Writes
``<work_dir>/oracle_eval[_resetpos].json`` (per-class IoU included)::

    python tools/misc/san_oracle_eval.py WORK_DIR [WORK_DIR ...] [--num 250] [--reset-pos]
"""
import argparse
import glob
import json
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CALIBRATIONS = (0.5, 1.0, 2.0)
MODES = ('normal', 'oracle_cls', 'oracle_mask', 'own_mask_bias', 'own_mask_logsig') + tuple(
    f'calib{v}' for v in CALIBRATIONS)


def run_config_path(work_dir: str) -> str:
    """The config a run was trained with: ``run_config.py`` (written by
    ``run_open_vocab_ablations.py``), else the one ``<config>.py`` that ``tools/train.py``
    (mmengine's runner) dumps into its work dir."""
    path = osp.join(work_dir, 'run_config.py')
    if osp.isfile(path):
        return path
    dumped = sorted(glob.glob(osp.join(work_dir, '*.py')))
    if len(dumped) != 1:
        found = ', '.join(osp.basename(p) for p in dumped) or 'none'
        raise FileNotFoundError(
            f'{work_dir}: no run_config.py and not exactly one dumped config *.py '
            f'(found: {found}); is this a training work dir?')
    return dumped[0]


def load_run(work_dir: str, reset_pos: bool = False):
    """The run's model (eval mode, last ``iter_*.pth``), its config and checkpoint path
    (config: :func:`run_config_path`)."""
    from mmengine.config import Config
    from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mmseg_ovseg  # noqa: F401
    register_all_modules()
    cfg = Config.fromfile(run_config_path(work_dir))
    model = MODELS.build(cfg.model)
    ckpts = sorted(glob.glob(osp.join(work_dir, 'iter_*.pth')),
                   key=lambda p: int(p.rsplit('_', 1)[1][:-4]))
    if not ckpts:
        raise FileNotFoundError(f'no iter_*.pth in {work_dir}')
    # Every tensor must come from the run (the config's CLIP file may hold other weights now
    # and is not read: init_weights is not called); extra keys are tolerated.
    state = _load_checkpoint(ckpts[-1], map_location='cpu')
    state = state.get('state_dict', state)
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise KeyError(f'{ckpts[-1]} lacks {len(missing)} model tensors, e.g. {missing[:5]}')
    load_state_dict(model, state, strict=False, logger='silent')
    if reset_pos:
        fresh = MODELS.build(cfg.model)
        fresh.init_weights()
        with torch.no_grad():
            model.backbone.visual.positional_embedding.copy_(
                fresh.backbone.visual.positional_embedding)
    return model.eval(), cfg, ckpts[-1]


def val_images(cfg, data_root: str, num: int):
    """The first ``num`` val images of the concept benchmark as the model's normalised input
    ``(1, 3, H, W)`` with their labels ``(H, W)`` int64."""
    from PIL import Image
    files = sorted(glob.glob(osp.join(data_root, 'img_dir/val/*.png')))[:num]
    if not files:
        raise FileNotFoundError(f'no val images in {data_root}/img_dir/val')
    mean = torch.tensor(cfg.data_preprocessor.mean).view(3, 1, 1)
    std = torch.tensor(cfg.data_preprocessor.std).view(3, 1, 1)
    for f in files:
        img = np.array(Image.open(f).convert('RGB'))  # the model's bgr_to_rgb input
        gt = np.array(Image.open(f.replace('img_dir', 'ann_dir'))).astype(np.int64)
        yield ((torch.from_numpy(img).permute(2, 0, 1).float() - mean) / std)[None], gt


def patch_bias(cover: torch.Tensor, heads: int) -> torch.Tensor:
    """SLS attention bias from per-patch coverage ``(K, P)``: 0 where a mask covers a patch by
    >= 25 % and on its most covered patch, -100 elsewhere -> ``(1, heads, K, P)``."""
    from mmseg_ovseg.clip.region_losses import cover_masks, mask_attn_bias
    from mmseg_ovseg.models.backbones.clip_sls import SLS_MASK_VALUE
    return mask_attn_bias(cover_masks(cover)[None], heads, SLS_MASK_VALUE)


class OracleEval:
    """Accumulates the intersections / unions of every mode and the naming counts."""

    def __init__(self, model, num_classes: int, unseen):
        from mmseg_ovseg.models.layers.mask_inference import semantic_inference
        self.model, self.C, self.unseen = model, num_classes, set(unseen)
        self.infer = semantic_inference
        self.heads = model.backbone.num_heads
        self.inter = {m: np.zeros(num_classes) for m in MODES}
        self.union = {m: np.zeros(num_classes) for m in MODES}
        self.named = {'seen': [0, 0], 'unseen': [0, 0]}  # oracle-mask objects: right, all
        self.query = {'seen': [0, 0, 0.0], 'unseen': [0, 0, 0.0]}  # right, all, IoU sum

    def _group(self, c: int) -> str:
        return 'unseen' if c in self.unseen else 'seen'

    def _label(self, cls, masks, size) -> np.ndarray:
        return self.infer(cls, masks, size)[0].argmax(0).numpy()

    def _recognize(self, feats, bias) -> torch.Tensor:
        """Class logits ``(1, K, C + 1)`` of SLS tokens attending under ``bias``."""
        tokens = self.model.recognize(feats['feats']['split_tokens'], bias)
        return self.model.decode_head.classify(tokens, feats['class_embeds'])

    def _oracle_mask(self, feats, gt, onehot_gt, present) -> np.ndarray:
        """Ground-truth objects named by the SLS path; counts the naming accuracy."""
        cover = F.adaptive_avg_pool2d(onehot_gt.permute(2, 0, 1)[None], feats['feats']['clip_hw'])
        cover = cover[0].reshape(self.C, -1)[present]  # (K, P)
        logits = self._recognize(feats, patch_bias(cover, self.heads))[0, :, :self.C]
        pred = np.zeros_like(gt)
        for c, n in zip(present, logits.argmax(-1).tolist()):
            if c == 0:
                continue
            pred[gt == c] = n
            self.named[self._group(c)][0] += int(n == c)
            self.named[self._group(c)][1] += 1
        return pred

    def _own_masks(self, feats, up, masks, cls, size) -> dict:
        """The bias decoder's bias replaced by the model's own masks (hard / log sigmoid)."""
        hw = feats['feats']['clip_hw']
        own = F.adaptive_avg_pool2d((up > 0.5).float()[None], hw)[0].flatten(1)
        hard = torch.where(own >= 0.25, 0.0, -100.0)
        hard[own.max(-1).values < 0.25] = 0.0  # an empty mask restricts nothing
        soft = F.logsigmoid(F.adaptive_max_pool2d(masks, hw))[0].flatten(1)
        return {name: self._label(self._recognize(feats, b[None, None].expand(
                    1, self.heads, -1, -1)), masks, size)
                for name, b in (('own_mask_bias', hard), ('own_mask_logsig', soft))}

    def _best_query(self, gt, up, cls, present) -> None:
        binary = up > 0.5
        for c in present:
            if c == 0:
                continue
            obj = torch.from_numpy(gt == c)
            iou = ((binary & obj).flatten(1).sum(1) /
                   (binary | obj).flatten(1).sum(1).clamp(min=1))
            q = int(iou.argmax())
            k = self._group(c)
            self.query[k][0] += int(int(cls[0, q, :self.C].argmax()) == c)
            self.query[k][1] += 1
            self.query[k][2] += float(iou[q])

    def add(self, x: torch.Tensor, gt: np.ndarray, seen_obj) -> dict:
        """One normalised image ``(1, 3, H, W)`` and its labels ``(H, W)``: every mode's
        prediction, accumulated; returns the predictions."""
        feats = self.model.extract_feat(x)
        all_cls, all_masks = self.model.decode(feats, deep_supervision=False)
        cls, masks, size = all_cls[-1], all_masks[-1], gt.shape
        preds = dict(normal=self._label(cls, masks, size))
        for v in CALIBRATIONS:
            shifted = cls.clone()
            shifted[..., seen_obj] -= v
            preds[f'calib{v}'] = self._label(shifted, masks, size)
        up = torch.sigmoid(F.interpolate(masks, size, mode='bilinear', align_corners=False))[0]
        onehot_gt = F.one_hot(torch.from_numpy(gt), self.C).float()  # (H, W, C)
        oracle = F.one_hot(torch.einsum('qhw,hwc->qc', up, onehot_gt).argmax(1), self.C)
        preds['oracle_cls'] = torch.einsum('qc,qhw->chw', oracle.float(), up).argmax(0).numpy()
        present = [int(c) for c in np.unique(gt)]
        preds['oracle_mask'] = self._oracle_mask(feats, gt, onehot_gt, present)
        preds.update(self._own_masks(feats, up, masks, cls, size))
        self._best_query(gt, up, cls, present)
        for name, p in preds.items():
            for c in np.unique(np.concatenate([gt.ravel(), p.ravel()])):
                self.inter[name][c] += ((p == c) & (gt == c)).sum()
                self.union[name][c] += ((p == c) | (gt == c)).sum()
        return preds

    def summary(self, vocabulary, seen, unseen) -> dict:
        out = {}
        for name in MODES:
            iou = np.where(self.union[name] > 0,
                           self.inter[name] / np.maximum(self.union[name], 1), np.nan) * 100
            s, u = float(np.nanmean(iou[seen])), float(np.nanmean(iou[unseen]))
            out[name] = dict(mIoU_seen=round(s, 2), mIoU_unseen=round(u, 2),
                             hIoU=round(2 * s * u / (s + u), 2),
                             iou={vocabulary[c]: round(float(iou[c]), 1)
                                  for c in range(self.C)})
        out['oracle_mask_naming'] = {k: dict(right=a, objects=n)
                                     for k, (a, n) in self.named.items()}
        out['best_query_naming'] = {
            k: dict(right=a, objects=n, mean_iou=round(100 * m / max(n, 1), 1))
            for k, (a, n, m) in self.query.items()}
        return out


def oracle_eval(work_dir: str, num: int = 250, reset_pos: bool = False,
                data_root: str = osp.join(REPO_ROOT, 'data/concepts')) -> dict:
    """Run every mode on a trained SAN work dir; writes and returns the summary (see the
    module docstring)."""
    from mmseg_ovseg.clip.vocabularies import get_zero_shot_split
    model, cfg, ckpt = load_run(work_dir, reset_pos)
    C = len(model.vocabulary)
    seen, unseen = get_zero_shot_split('concepts', C)
    acc = OracleEval(model, C, unseen)
    num_images = 0
    with torch.no_grad():
        for x, gt in val_images(cfg, data_root, num):
            acc.add(x, gt, [c for c in seen if c != 0])
            num_images += 1
    out = dict(work_dir=work_dir, checkpoint=ckpt, num_images=num_images, reset_pos=reset_pos)
    out.update(acc.summary(model.vocabulary, seen, unseen))
    _print(out)
    path = osp.join(work_dir, 'oracle_eval' + ('_resetpos' if reset_pos else '') + '.json')
    with open(path, 'w') as f:
        json.dump(out, f, indent=1)
    return out


def _print(out: dict) -> None:
    for name in MODES:
        r = out[name]
        print(f"{name:16s} mIoU(S) {r['mIoU_seen']:5.1f}  mIoU(U) {r['mIoU_unseen']:5.1f}  "
              f"hIoU {r['hIoU']:5.1f}")
    print('objects named with oracle masks: ' + ', '.join(
        f"{k} {v['right']}/{v['objects']} = {100 * v['right'] / max(v['objects'], 1):.1f} %"
        for k, v in out['oracle_mask_naming'].items()))
    print('objects named by their best-overlapping query (its mean mask IoU): ' + ', '.join(
        f"{k} {100 * v['right'] / max(v['objects'], 1):.1f} % ({v['mean_iou']:.1f})"
        for k, v in out['best_query_naming'].items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--num', type=int, default=250, help='val images')
    parser.add_argument('--reset-pos', action='store_true',
                        help='the pretrained CLIP position embedding instead of the trained one')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for work_dir in args.work_dirs:
        print(f'[oracle] {work_dir}', flush=True)
        oracle_eval(work_dir, args.num, args.reset_pos)


if __name__ == '__main__':
    main()
