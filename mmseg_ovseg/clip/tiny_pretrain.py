"""Contrastive pretraining of the tiny CLIP on generated captions (``tools/pretrain_clip.py``).

open_clip's tokenizer and ``ClipLoss``, AdamW + cosine schedule, resumable training state,
optional region-text terms (:mod:`mmseg_ovseg.clip.region_losses`). docs/tiny_clip.md has the
recipes and the measured results.
"""
import json
import math
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

from .region_losses import (
    dense_region_loss,
    object_queries,
    patch_cover,
    patch_embeddings,
    query_classification_loss,
    sls_embeddings,
)
from .region_losses import sls_tower as build_sls_tower
from .tiny import (
    DEFAULT_CHECKPOINT,
    PRETRAIN_DEFAULTS,
    ZERO_SHOT_TEMPLATE,
    build_clip,
    evaluate_concepts,
)


def cosine_lr(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, t)))


def param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """open_clip's rule: no weight decay on gains, biases, embeddings and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (p.ndim < 2 or 'bn' in name or 'ln' in name or 'bias' in name
                   or 'logit_scale' in name or 'embedding' in name)
        (no_decay if exclude else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay),
            dict(params=no_decay, weight_decay=0.0)]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
               images: torch.Tensor, tokens: torch.Tensor,
               cover: Optional[torch.Tensor] = None,
               class_tokens: Optional[torch.Tensor] = None,
               dense_weight: float = 0.0,
               sls_weight: float = 0.0,
               sls_split: int = 1,
               sls_tower: Optional[nn.Module] = None,
               allowed: Optional[Sequence[int]] = None) -> float:
    """One contrastive step (``ClipLoss`` on the batch's image-text pairs); returns the loss
    before the update. The logit scale is clamped at log(100), as in CLIP.

    With ``cover`` (:func:`~mmseg_ovseg.clip.region_losses.patch_cover` of the batch's label
    maps) and ``class_tokens`` (the object class prompts), region-text terms are added:
    ``dense_weight`` x ``dense_region_loss`` (patch tokens) and ``sls_weight`` x
    ``sls_region_loss`` (SAN's SLS path from block ``sls_split``; needs ``sls_tower``), both
    supervising only the ``allowed`` object classes (None: all).
    """
    if cover is not None and (dense_weight or sls_weight):
        n = len(tokens)
        text_all = F.normalize(model.encode_text(torch.cat([tokens, class_tokens])), dim=-1)
        logit_scale = model.logit_scale.exp()
        if sls_weight:
            if sls_tower is None:
                raise ValueError('sls_weight needs sls_tower (region_losses.sls_tower)')
            # one forward for all terms: the SLS tokens share CLIP's blocks up to the split,
            # and the visual tokens after the last block give the CLS and patch embeddings
            masks, targets, sls_text = object_queries(cover, text_all[n:], allowed)
            sls_embeds, visual_tokens = sls_embeddings(sls_tower, images, masks, sls_split,
                                                       return_visual=True)
            out = sls_tower.project(visual_tokens)
            pooled, patch_embeds = out[:, 0], out[:, 1:]
        else:
            pooled, patch_embeds = patch_embeddings(model.visual, images)
        loss = loss_fn(F.normalize(pooled, dim=-1), text_all[:n], logit_scale)
        if dense_weight:
            loss = loss + dense_weight * dense_region_loss(
                F.normalize(patch_embeds, dim=-1), cover, text_all[n:], logit_scale,
                allowed=allowed)
        if sls_weight:
            loss = loss + sls_weight * query_classification_loss(
                sls_embeds, targets, sls_text, logit_scale)
    else:
        image_features, text_features, logit_scale = model(images, tokens)
        loss = loss_fn(image_features, text_features, logit_scale)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return float(loss.detach())


def _atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary sibling, then rename: never a half-written file."""
    d = osp.dirname(osp.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = osp.join(d, f'.{osp.basename(path)}.tmp-{os.getpid()}')
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def state_path_for(out: str) -> str:
    """The training state file next to the checkpoint ``out``."""
    return out + '.train_state.pth'


# Settings that must match to resume a training state: they determine the weights (the
# recipe recorded next to a checkpoint, see recipe_path_for).
_RESUME_KEYS = ('model', 'steps', 'batch_size', 'lr', 'warmup', 'weight_decay', 'seed',
                'captions', 'dense_weight', 'sls_weight', 'sls_split', 'region_exclude', 'init',
                'region_start')


def recipe_path_for(out: str) -> str:
    """The JSON file next to the checkpoint ``out`` recording the settings it was pretrained
    with (the keys of ``_RESUME_KEYS``), read by :func:`~mmseg_ovseg.clip.tiny.ensure_tiny_clip`
    to tell a cached checkpoint of another recipe."""
    return out + '.recipe.json'


def recipe_of(cfg: dict) -> dict:
    """The weight-determining settings of a full pretraining config (``captions``: no
    options and ``{}`` are the same)."""
    recipe = {k: cfg.get(k, PRETRAIN_DEFAULTS.get(k)) for k in _RESUME_KEYS}
    recipe['captions'] = dict(recipe['captions'] or {})
    return recipe


def read_recipe(out: str) -> Optional[dict]:
    """The recipe of checkpoint ``out``: its ``.recipe.json``, else the config saved in its
    training state (checkpoints written before recipes were recorded); None if neither."""
    path = recipe_path_for(out)
    if osp.isfile(path):
        with open(path) as f:
            return recipe_of(json.load(f))
    state = state_path_for(out)
    if osp.isfile(state):
        return recipe_of(torch.load(state, map_location='cpu', weights_only=False).get(
            'config', {}))
    return None


def _write_recipe(cfg: dict, out: str) -> None:
    path = recipe_path_for(out)
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(recipe_of(cfg), f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def pretrain(out: str = DEFAULT_CHECKPOINT,
             resume: bool = False,
             state_path: Optional[str] = None,
             captions: Optional[dict] = None,
             threads: Optional[int] = None,
             progress: bool = True,
             eval_every: int = 0,
             stop_after: Optional[int] = None,
             log: Callable[[str], None] = print,
             **kwargs) -> Dict:
    """Contrastive pretraining of a CLIP on generated captions; writes ``out``.

    Sample ``j`` of step ``s`` is caption sample ``s * batch_size + j`` of the seed's stream,
    so a resumed run sees exactly the data of an uninterrupted one. The training state
    (model, optimizer, step, elapsed time) is written atomically to ``state_path`` (default
    ``out + '.train_state.pth'``) every ``save_every`` steps; ``resume=True`` continues from
    it when it exists. ``out`` is a plain open_clip ``CLIP.state_dict()``.

    Args:
        out: checkpoint path.
        resume: continue from the training state file if present.
        state_path: training state file.
        captions: keyword arguments of :class:`~mmseg_ovseg.datasets.captions.CaptionGenerator`
            (``seed`` and ``size`` are set here).
        threads: torch intra-op threads (default: unchanged).
        progress: show a tqdm bar with the ETA.
        eval_every: also report zero-shot top-1 every that many steps (0: only at the end).
        stop_after: stop (training state saved, no checkpoint) once this step is done, e.g.
            to split a run over sessions; ``resume=True`` continues it.
        log: where to print lines.
        **kwargs: override :data:`PRETRAIN_DEFAULTS`.

    Returns:
        dict: ``zero_shot`` (see :func:`zero_shot_accuracy`), ``steps``, ``final_loss``,
        ``wall_s`` and ``cpu_s`` (process CPU seconds, all threads; summed over resumed
        segments), ``checkpoint``.
    """
    unknown = set(kwargs) - set(PRETRAIN_DEFAULTS)
    if unknown:
        raise TypeError(f'pretrain: unknown settings {sorted(unknown)}; known: '
                        f'{sorted(PRETRAIN_DEFAULTS)}')
    cfg = dict(PRETRAIN_DEFAULTS, **kwargs)
    cfg['captions'] = dict(captions or {})
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _pretrain(cfg, out, resume, state_path, eval_every, stop_after, progress, log)
    finally:
        torch.set_num_threads(old_threads)


def region_allowed(exclude) -> Optional[List[int]]:
    """Object classes (indices into ``CONCEPT_CLASSES[1:]``) that get region supervision when
    the unseen classes of the zero-shot split ``exclude`` (on the concept segmentation
    benchmark's labels) are left out; None when ``exclude`` is None."""
    if exclude is None:
        return None
    from mmseg_ovseg.clip.vocabularies import get_zero_shot_split
    from mmseg_ovseg.datasets.concept_seg import CONCEPT_INDEX, CONCEPT_SEG_CLASSES
    from mmseg_ovseg.datasets.concepts import CONCEPT_CLASSES
    _, unseen = get_zero_shot_split(exclude, len(CONCEPT_SEG_CLASSES))
    skip = {CONCEPT_INDEX[i] - 1 for i in unseen}
    return [i for i in range(len(CONCEPT_CLASSES) - 1) if i not in skip]


def region_start_step(cfg: dict) -> int:
    """First step with the region terms: ``region_start`` (a fraction in [0, 1)) of the
    schedule."""
    frac = float(cfg['region_start'])
    if not 0.0 <= frac < 1.0:
        raise ValueError(f'region_start must be a fraction in [0, 1), got {frac}')
    return int(round(frac * cfg['steps']))


def _region_setup(model, cfg, tokenizer) -> Optional[dict]:
    """Fixed arguments of the region-text terms of :func:`train_step` (None: none)."""
    if not (cfg['dense_weight'] or cfg['sls_weight']):
        return None
    from mmseg_ovseg.datasets.concepts import CONCEPT_CLASSES
    patch = model.visual.patch_size
    return dict(
        patch=int(patch[0] if isinstance(patch, (tuple, list)) else patch),
        num_classes=len(CONCEPT_CLASSES),
        class_tokens=tokenizer([ZERO_SHOT_TEMPLATE.format(n) for n in CONCEPT_CLASSES[1:]]),
        dense_weight=cfg['dense_weight'], sls_weight=cfg['sls_weight'],
        sls_split=cfg['sls_split'],
        sls_tower=build_sls_tower(model, cfg['model']) if cfg['sls_weight'] else None,
        allowed=region_allowed(cfg['region_exclude']))


def _build(cfg, log):
    """Model (random, or ``cfg['init']``), tokenizer, caption generator and optimizer."""
    from mmseg_ovseg.datasets.captions import CaptionGenerator
    model = build_clip(cfg['model'], cfg['seed'])
    if cfg['init']:
        if not osp.isfile(cfg['init']):
            raise FileNotFoundError(f'init checkpoint {cfg["init"]} does not exist')
        model.load_state_dict(torch.load(cfg['init'], map_location='cpu', weights_only=True),
                              strict=True)
        log(f'initialised from {cfg["init"]}')
    image_size = model.visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
    gen = CaptionGenerator(seed=cfg['seed'], size=image_size, **cfg['captions'])
    optimizer = torch.optim.AdamW(param_groups(model, cfg['weight_decay']), lr=cfg['lr'],
                                  betas=(0.9, 0.98), eps=1e-6)
    return model, open_clip.get_tokenizer(cfg['model']), gen, optimizer


def _resume(cfg, state_path, model, optimizer, log):
    """``(start step, elapsed times)`` of the training state at ``state_path`` (loaded into
    ``model`` and ``optimizer``); refuses a state written with other settings."""
    state = torch.load(state_path, map_location='cpu', weights_only=False)
    saved = state.get('config', {})
    # (a state written before a setting existed has that setting's default)
    saved = {k: saved.get(k, PRETRAIN_DEFAULTS.get(k)) for k in _RESUME_KEYS}
    diff = {k: (saved[k], cfg[k]) for k in _RESUME_KEYS if saved[k] != cfg[k]}
    if diff:
        raise ValueError(f'{state_path} was written with other settings (saved, now): '
                         f'{diff}; delete it or pass the same settings')
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    log(f'resumed from {state_path} at step {int(state["step"])}/{cfg["steps"]}')
    return int(state['step']), dict(state['elapsed'])


def _batch(gen, tokenizer, region, step, bs):
    """Images, caption tokens and the region-term arguments of step ``step``."""
    from mmseg_ovseg.datasets.captions import to_tensor
    samples = [gen.sample(step * bs + j, return_label=region is not None) for j in range(bs)]
    images = torch.stack([to_tensor(s[0]) for s in samples])
    tokens = tokenizer([s[1] for s in samples])
    if region is None:
        return images, tokens, {}
    args = {k: v for k, v in region.items() if k not in ('patch', 'num_classes')}
    args['cover'] = patch_cover(np.stack([s[4] for s in samples]), region['patch'],
                                region['num_classes'])
    return images, tokens, args


def _pretrain(cfg, out, resume, state_path, eval_every, stop_after, progress, log):
    from open_clip.loss import ClipLoss
    from tqdm import tqdm
    state_path = state_path or state_path_for(out)
    model, tokenizer, gen, optimizer = _build(cfg, log)
    loss_fn = ClipLoss()
    start, elapsed = 0, dict(wall=0.0, cpu=0.0)
    if resume and osp.isfile(state_path):
        start, elapsed = _resume(cfg, state_path, model, optimizer, log)

    def save_state(step):
        _atomic_save(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                          step=step, config=cfg, elapsed=elapsed), state_path)

    steps, bs = cfg['steps'], cfg['batch_size']
    region = _region_setup(model, cfg, tokenizer)
    region_from = region_start_step(cfg)
    model.train()
    loss_value = float('nan')
    t_wall, t_cpu = time.time(), time.process_time()
    bar = tqdm(total=steps, initial=start, desc='pretrain tiny CLIP', disable=not progress,
               dynamic_ncols=True)
    for step in range(start, steps):
        images, tokens, region_args = _batch(gen, tokenizer,
                                             region if step >= region_from else None, step, bs)
        lr = cosine_lr(step, steps, cfg['lr'], cfg['warmup'])
        for group in optimizer.param_groups:
            group['lr'] = lr
        loss_value = train_step(model, optimizer, loss_fn, images, tokens, **region_args)
        bar.update(1)
        bar.set_postfix(loss=f'{loss_value:.3f}', lr=f'{lr:.2e}')
        done = step + 1
        now_wall, now_cpu = time.time(), time.process_time()
        elapsed['wall'] += now_wall - t_wall
        elapsed['cpu'] += now_cpu - t_cpu
        t_wall, t_cpu = now_wall, now_cpu
        if eval_every and done % eval_every == 0 and done < steps:
            acc = evaluate_concepts(model, cfg['model'], cfg['eval_seed'],
                                    cfg['eval_per_class'])
            bar.write(f'step {done}: zero-shot top-1 {acc["top1"]:.1f}% '
                      f'(cpu {elapsed["cpu"]:.0f}s, wall {elapsed["wall"]:.0f}s)')
            t_wall, t_cpu = time.time(), time.process_time()  # evaluation not counted
        if done % cfg['save_every'] == 0 or done == steps or done == stop_after:
            save_state(done)
        if stop_after is not None and done >= stop_after and done < steps:
            bar.close()
            log(f'stopped after step {done}/{steps}; training state: {state_path}')
            return dict(zero_shot=None, steps=done, final_loss=loss_value,
                        wall_s=elapsed['wall'], cpu_s=elapsed['cpu'], checkpoint=None)
    bar.close()
    _atomic_save(model.state_dict(), out)
    _write_recipe(cfg, out)
    acc = evaluate_concepts(model, cfg['model'], cfg['eval_seed'], cfg['eval_per_class'])
    log(f'zero-shot top-1 over {len(acc["per_class"])} concepts ({acc["num_images"]} held-out '
        f'images, "{ZERO_SHOT_TEMPLATE}"): {acc["top1"]:.1f}%')
    log(f'training time: {elapsed["wall"]:.0f}s wall, {elapsed["cpu"]:.0f}s process CPU '
        f'({torch.get_num_threads()} threads); checkpoint: {out}')
    return dict(zero_shot=acc, steps=steps, final_loss=loss_value, wall_s=elapsed['wall'],
                cpu_s=elapsed['cpu'], checkpoint=out)
