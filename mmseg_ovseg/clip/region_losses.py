"""Region-text losses for pretraining the tiny CLIP on generated scenes (docs/tiny_clip.md).

Contrastive CLIP training aligns only the CLS embedding of a whole image with its caption;
the segmentation methods ask other tokens to name *regions*:

- ZegCLIP, MaskCLIP and the one-stage baseline match text against the patch tokens
  (``ln_post`` + ``proj`` of each patch): :func:`dense_region_loss`.
- SAN recognises a mask proposal with an SLS token, a copy of CLS that runs CLIP's last
  blocks attending to the patches through the side adapter's attention bias (SAN Sec. 3.2):
  :func:`sls_region_loss` trains exactly that path, with the object's ground-truth mask as
  the bias (0 on the patches it covers, ``SLS_MASK_VALUE`` elsewhere).

Both classify regions among class prompts. ``allowed`` restricts the classes that receive
region supervision (and compete in its softmax): the ``'concepts'`` zero-shot split's unseen
classes can be left out, so that they are learnt from captions only -- the way a web CLIP
knows a category without any region-level label of it.
"""
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['patch_cover', 'cover_masks', 'patch_embeddings', 'dense_region_loss',
           'mask_attn_bias', 'object_queries',
           'sls_embeddings', 'query_classification_loss', 'sls_region_loss', 'sls_tower']


def patch_cover(labels: np.ndarray, patch_size: int, num_classes: int) -> torch.Tensor:
    """Fraction of each ViT patch covered by each class.

    Args:
        labels: integer ``(B, H, W)`` label maps, values in ``[0, num_classes)``; ``H`` and
            ``W`` multiples of ``patch_size``.

    Returns:
        float ``(B, num_classes, (H // patch_size) * (W // patch_size))``, patches in the
        ViT's row-major token order; sums to 1 over classes.
    """
    labels = np.asarray(labels)
    b, h, w = labels.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f'label maps {labels.shape} are not a multiple of the patch size '
                         f'{patch_size}')
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f'labels must be in [0, {num_classes}), got '
                         f'[{labels.min()}, {labels.max()}]')
    gh, gw = h // patch_size, w // patch_size
    pidx = (np.arange(h)[:, None] // patch_size) * gw + np.arange(w)[None, :] // patch_size
    num_p = gh * gw
    flat = labels.astype(np.int64) * num_p + pidx[None]
    flat = flat + (np.arange(b) * num_classes * num_p)[:, None, None]
    counts = np.bincount(flat.ravel(), minlength=b * num_classes * num_p)
    cover = counts.reshape(b, num_classes, num_p) / float(patch_size * patch_size)
    return torch.from_numpy(cover).float()


def _restrict(cover: torch.Tensor, class_text: torch.Tensor,
              allowed: Optional[Sequence[int]]):
    """Object coverage ``(B, C', P)`` and text ``(C', E)`` of the allowed object classes
    (indices into the ``C`` object classes; None: all)."""
    obj = cover[:, 1:]
    if obj.shape[1] != class_text.shape[0]:
        raise ValueError(f'cover has {obj.shape[1]} object classes, class_text '
                         f'{class_text.shape[0]}')
    if allowed is None:
        return obj, class_text
    idx = torch.as_tensor(list(allowed), dtype=torch.long)
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= obj.shape[1]:
        raise ValueError(f'allowed class indices must be in [0, {obj.shape[1]}), got '
                         f'{list(allowed)[:8]}...')
    return obj[:, idx], class_text[idx]


def dense_region_loss(patch_embeds: torch.Tensor, cover: torch.Tensor,
                      class_text: torch.Tensor, logit_scale: torch.Tensor,
                      min_cover: float = 0.5,
                      allowed: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Region-text loss on the patch tokens: each object's region, and each patch that one
    object covers, is classified among the class prompts.

    Two cross-entropy terms over ``logit_scale * cos(embedding, class text)``, averaged:
    (1) per object, the patch embeddings averaged with its coverage as weights (objects
    covering < 1 patch in all are skipped); (2) per patch whose largest object coverage is
    >= ``min_cover``, its own embedding, target that object.

    Args:
        patch_embeds: ``(B, P, E)`` L2-normalised patch embeddings (``ln_post`` + ``proj``).
        cover: ``(B, 1 + C, P)`` from :func:`patch_cover`, class 0 = background (no text).
        class_text: ``(C, E)`` L2-normalised embeddings of the ``C`` object classes.
        logit_scale: scalar, the CLIP temperature (``exp`` already applied).
        allowed: object classes (indices into ``C``) that get region supervision; the
            others' regions and patches are skipped and their text is not a candidate.

    Returns:
        scalar loss (0 when the batch has no supervised object).
    """
    obj, class_text = _restrict(cover, class_text, allowed)
    logits = logit_scale * patch_embeds @ class_text.t()  # (B, P, C)
    terms = []
    area = obj.sum(-1)  # (B, C), in patches
    bi, ci = torch.nonzero(area >= 1.0, as_tuple=True)
    if len(bi):
        pooled = torch.einsum('np,npe->ne', obj[bi, ci], patch_embeds[bi]) / area[bi, ci, None]
        region_logits = logit_scale * F.normalize(pooled, dim=-1) @ class_text.t()
        terms.append(F.cross_entropy(region_logits, ci))
    best, target = obj.max(1)  # (B, P)
    keep = best >= min_cover
    if keep.any():
        terms.append(F.cross_entropy(logits[keep], target[keep]))
    if not terms:
        return patch_embeds.sum() * 0
    return sum(terms) / len(terms)


def mask_attn_bias(masks: torch.Tensor, num_heads: int, mask_value: float) -> torch.Tensor:
    """SLS attention bias from binary patch masks: 0 where the mask is set, ``mask_value``
    elsewhere, the same for every head.

    Args:
        masks: bool ``(B, Q, P)``.

    Returns:
        ``(B, num_heads, Q, P)``.
    """
    bias = torch.full(masks.shape, float(mask_value)).masked_fill(masks, 0.0)
    return bias[:, None].expand(-1, num_heads, -1, -1)


def sls_tower(model: nn.Module, model_name: str) -> nn.Module:
    """A :class:`~mmseg_ovseg.models.backbones.CLIPVisionTransformer` that runs on
    ``model.visual`` (the same parameters, not a copy), for its SLS forward."""
    from mmseg_ovseg.models.backbones.clip_vit import CLIPVisionTransformer
    tower = CLIPVisionTransformer(clip_model=model_name, frozen=False, onednn_linear=False)
    tower.visual = model.visual
    return tower


def cover_masks(cover: torch.Tensor, min_cover: float = 0.25) -> torch.Tensor:
    """Patch masks of regions: the patches a region covers by at least ``min_cover``, and
    always its most covered patch (so no SLS query attends to nothing).

    Args:
        cover: ``(..., P)`` per-patch coverage fractions (:func:`patch_cover`).

    Returns:
        bool ``(..., P)``.
    """
    masks = cover >= min_cover
    return masks.scatter_(-1, cover.argmax(-1, keepdim=True), True)


def patch_embeddings(visual: nn.Module, images: torch.Tensor):
    """open_clip's image embedding ``(B, E)`` and patch embeddings ``(B, P, E)`` (``ln_post``
    + ``proj`` on every patch token) from one forward of its visual tower (not normalised)."""
    visual.output_tokens = True
    try:
        pooled, patch_tokens = visual(images)
    finally:
        visual.output_tokens = False
    return pooled, patch_tokens @ visual.proj


def object_queries(cover: torch.Tensor, class_text: torch.Tensor,
                   allowed: Optional[Sequence[int]] = None, min_cover: float = 0.25):
    """One SLS query per supervised object class present in each image.

    Args:
        cover: ``(B, 1 + C, P)`` from :func:`patch_cover`.
        class_text: ``(C, E)`` class prompt embeddings.
        allowed: as in :func:`dense_region_loss`.
        min_cover: a query sees the patches its object covers by at least this much (and
            always its object's most covered patch).

    Returns:
        masks ``(B, Q, P)`` bool, targets ``(B, Q)`` (indices into the returned text; -100
        for padding queries, which see no patch), and the ``(C', E)`` text of the allowed
        classes. ``Q >= 1`` (the largest number of queries in an image).
    """
    obj, class_text = _restrict(cover, class_text, allowed)
    present = obj.sum(-1) >= 1.0  # (B, C): objects covering >= 1 patch in all
    q = max(int(present.sum(1).max()), 1) if len(present) else 1
    # the present classes of each image first, in class order (a stable sort keeps it)
    order = present.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :q]
    valid = present.gather(1, order)  # (B, Q)
    region = obj.gather(1, order[..., None].expand(-1, -1, obj.shape[-1]))  # (B, Q, P)
    masks = cover_masks(region, min_cover) & valid[..., None]
    targets = torch.where(valid, order, torch.full_like(order, -100))
    return masks, targets, class_text


def sls_embeddings(tower: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                   split_layer: int, return_visual: bool = False):
    """SAN's recognition with ``masks`` as the attention bias: SLS tokens (copies of CLS at
    block ``split_layer``) run the remaining blocks seeing only their mask's patches (and
    themselves), then ``ln_post`` + ``proj``.

    Args:
        tower: :func:`sls_tower` of the CLIP.
        images: ``(B, 3, H, W)`` normalised images at the CLIP input size.
        masks: bool ``(B, Q, P)`` patch masks on the CLIP grid.
        return_visual: also return the visual tokens ``(B, 1 + P, D)`` after the last block
            (CLIP's ordinary forward, shared with the SLS tokens up to the split).

    Returns:
        ``(B, Q, E)`` embeddings (not normalised) and the visual tokens (None unless asked).
    """
    from mmseg_ovseg.models.backbones.clip_vit import SLS_MASK_VALUE
    bias = mask_attn_bias(masks, tower.num_heads, SLS_MASK_VALUE).to(images.dtype)
    tokens, _ = tower.embed(images)
    split_tokens, _ = tower.forward_blocks(tokens, 0, split_layer)
    sls, visual = tower.forward_sls(split_tokens, bias, split_layer, return_visual=return_visual)
    return tower.project(sls), visual


def query_classification_loss(embeds: torch.Tensor, targets: torch.Tensor,
                              class_text: torch.Tensor,
                              logit_scale: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logit_scale * cos(embedding, class text)`` over the queries with a
    target (``>= 0``); 0 when there is none."""
    keep = targets >= 0
    if not keep.any():
        return embeds.sum() * 0
    logits = logit_scale * F.normalize(embeds[keep], dim=-1) @ class_text.t()
    return F.cross_entropy(logits, targets[keep])


def sls_region_loss(tower: nn.Module, images: torch.Tensor, cover: torch.Tensor,
                    class_text: torch.Tensor, logit_scale: torch.Tensor, split_layer: int,
                    min_cover: float = 0.25,
                    allowed: Optional[Sequence[int]] = None) -> torch.Tensor:
    """SAN's recognition path trained on ground-truth regions.

    Per image, one SLS token per supervised object class present (:func:`object_queries`)
    runs :func:`sls_embeddings` with its object's mask;
    :func:`query_classification_loss` against the class prompts.

    Args:
        tower: :func:`sls_tower` of the CLIP being trained.
        images: ``(B, 3, H, W)`` normalised images at the CLIP input size.
        cover: ``(B, 1 + C, P)`` from :func:`patch_cover` of the images' label maps.
        class_text: ``(C, E)`` L2-normalised class prompt embeddings.
        logit_scale: scalar, ``exp`` already applied.
        split_layer: first block run by the SLS tokens (SAN's split; the configs' value).
        allowed: as in :func:`dense_region_loss`.

    Returns:
        scalar loss (0 when the batch has no supervised object).
    """
    masks, targets, class_text = object_queries(cover, class_text, allowed, min_cover)
    embeds, _ = sls_embeddings(tower, images, masks, split_layer)
    return query_classification_loss(embeds, targets, class_text, logit_scale)
