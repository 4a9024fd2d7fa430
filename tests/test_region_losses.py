"""Region-text pretraining losses of the tiny CLIP (mmseg_ovseg/clip/region_losses.py)."""
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

import mmseg_ovseg  # noqa: F401  (registers 'ovseg-tiny-clip' with open_clip)
from mmseg_ovseg.clip.region_losses import (
    dense_region_loss,
    mask_attn_bias,
    object_queries,
    patch_cover,
    sls_embeddings,
    sls_region_loss,
    sls_tower,
)
from mmseg_ovseg.clip.tiny import TINY_CLIP_NAME, ZERO_SHOT_TEMPLATE, build_clip
from mmseg_ovseg.clip.tiny_pretrain import param_groups, region_allowed, train_step
from mmseg_ovseg.clip.vocabularies import get_vocabulary
from mmseg_ovseg.datasets.captions import CaptionGenerator, to_tensor
from mmseg_ovseg.datasets.concepts import CONCEPT_CLASSES
from mmseg_ovseg.models.backbones.clip_vit import SLS_MASK_VALUE


def test_sls_tower_shares_weights_and_full_mask_is_clip():
    """An SLS token that may see every patch is CLIP's own image embedding (open_clip's
    ``encode_image``), and the tower trains the CLIP's parameters, not a copy."""
    model = build_clip(seed=0).eval()
    tower = sls_tower(model, TINY_CLIP_NAME)
    assert tower.visual is model.visual
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.encode_image(images)
        for split in (1, 3):
            out, _ = sls_embeddings(tower, images, torch.ones(2, 3, 64, dtype=torch.bool), split)
            assert torch.allclose(out, ref[:, None].expand_as(out), atol=1e-5)


def test_one_forward_gives_open_clips_embeddings():
    """The visual tokens that :func:`sls_embeddings` returns besides the SLS tokens give, through
    ``ln_post`` + ``proj``, open_clip's own image embedding (CLS) and patch embeddings: the
    single forward of a pretraining step with the SLS term feeds the contrastive and the
    patch losses what open_clip's forward would (checked in training mode)."""
    from mmseg_ovseg.clip.region_losses import patch_embeddings as _visual_embeds
    model = build_clip(seed=2).train()
    tower = sls_tower(model, TINY_CLIP_NAME)
    images = torch.randn(3, 3, 64, 64)
    masks = torch.zeros(3, 2, 64, dtype=torch.bool)
    masks[:, 0, :20] = True
    _, visual_tokens = sls_embeddings(tower, images, masks, 1, return_visual=True)
    out = tower.project(visual_tokens)
    pooled, patches = _visual_embeds(model.visual, images)
    model.visual.output_tokens = True
    ref_pooled, ref_tokens = model.visual(images)
    model.visual.output_tokens = False
    torch.testing.assert_close(out[:, 0], ref_pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled)
    torch.testing.assert_close(out[:, 1:], ref_tokens @ model.visual.proj, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patches, ref_tokens @ model.visual.proj)


def test_object_queries_one_per_present_class():
    """Queries are the present supervised classes of each image in class order, padded with
    targets -100 and empty masks; each mask holds the patches covered >= min_cover and the
    most covered one."""
    cover = torch.zeros(2, 4, 4)  # background + 3 classes, 4 patches
    cover[0, 0] = 1.0
    cover[0, 2] = torch.tensor([0.6, 0.5, 0.0, 0.0])
    cover[0, 3] = torch.tensor([0.3, 0.5, 0.5, 0.0])
    cover[0, 0] -= cover[0, 2] + cover[0, 3]
    cover[1, 1] = torch.tensor([0.1, 0.1, 0.1, 0.9])
    cover[1, 0] = 1 - cover[1, 1]
    text = torch.eye(3)
    masks, targets, out_text = object_queries(cover, text, min_cover=0.25)
    assert targets.tolist() == [[1, 2], [0, -100]]
    assert masks[0, 0].tolist() == [True, True, False, False]
    assert masks[0, 1].tolist() == [True, True, True, False]
    assert masks[1, 0].tolist() == [False, False, False, True] and not masks[1, 1].any()
    assert torch.equal(out_text, text)
    masks, targets, out_text = object_queries(cover, text, allowed=[2], min_cover=0.25)
    assert targets.tolist() == [[0], [-100]] and torch.equal(out_text, text[[2]])
    assert not masks[1].any()


def test_sls_token_sees_only_its_mask():
    """With the SLS path in the last block only (split 3 of 4: earlier SLS blocks also see
    patch tokens that mixed with every patch), changing the tokens of patches outside a
    query's mask leaves its embedding unchanged; changing a patch inside changes it."""
    model = build_clip(seed=1).eval()
    tower = sls_tower(model, TINY_CLIP_NAME)
    images = torch.randn(1, 3, 64, 64)
    masks = torch.zeros(1, 2, 64, dtype=torch.bool)
    masks[0, 0, :10] = True
    masks[0, 1, 30:40] = True
    bias = mask_attn_bias(masks, tower.num_heads, SLS_MASK_VALUE)
    with torch.no_grad():
        tokens, _ = tower.embed(images)
        split_tokens, _ = tower.forward_blocks(tokens, 0, 3)
        base, _ = tower.forward_sls(split_tokens, bias, 3, return_visual=False)
        moved = split_tokens.clone()
        moved[:, 1 + 50:] += torch.randn_like(moved[:, 1 + 50:])  # patches 50..63: no mask
        out, _ = tower.forward_sls(moved, bias, 3, return_visual=False)
        assert torch.allclose(out, base, atol=1e-5)
        inside = split_tokens.clone()
        inside[:, 1 + 35] += torch.randn(inside.shape[-1])  # in query 1's mask only
        out, _ = tower.forward_sls(inside, bias, 3, return_visual=False)
        assert torch.allclose(out[:, 0], base[:, 0], atol=1e-5)
        assert (out[:, 1] - base[:, 1]).abs().max() > 1e-3


def test_mask_attn_bias():
    masks = torch.tensor([[[True, False, True]]])
    bias = mask_attn_bias(masks, 4, -100.0)
    assert bias.shape == (1, 4, 1, 3)
    assert bias[0, :, 0].tolist() == [[0.0, -100.0, 0.0]] * 4


def _batch(n=16, seed=0):
    gen = CaptionGenerator(seed=seed)
    samples = [gen.sample(i, return_label=True) for i in range(n)]
    images = torch.stack([to_tensor(s[0]) for s in samples])
    tok = open_clip.get_tokenizer(TINY_CLIP_NAME)
    cover = patch_cover(np.stack([s[4] for s in samples]), 8, len(CONCEPT_CLASSES))
    class_tokens = tok([ZERO_SHOT_TEMPLATE.format(n) for n in CONCEPT_CLASSES[1:]])
    return images, tok([s[1] for s in samples]), cover, class_tokens


def test_region_allowed_leaves_out_the_unseen_concepts():
    """'concepts' leaves out exactly the split's 9 unseen names (read from the split data)."""
    names = get_vocabulary('concepts')
    from mmseg_ovseg.clip.vocabularies import get_zero_shot_split
    _, unseen = get_zero_shot_split('concepts', len(names))
    allowed = region_allowed('concepts')
    left_out = {CONCEPT_CLASSES[i + 1] for i in range(len(CONCEPT_CLASSES) - 1)} - {
        CONCEPT_CLASSES[i + 1] for i in allowed}
    assert left_out == {names[i] for i in unseen} and len(left_out) == 9
    assert region_allowed(None) is None


def test_allowed_classes_get_no_region_loss():
    """Objects of classes outside ``allowed`` add nothing to either region loss."""
    model = build_clip(seed=0).eval()
    tower = sls_tower(model, TINY_CLIP_NAME)
    images, _, cover, class_tokens = _batch(8)
    with torch.no_grad():
        text = F.normalize(model.encode_text(class_tokens), dim=-1)
    scale = model.logit_scale.exp()
    present = (cover[:, 1:].sum(-1) >= 1).any(0)
    assert present.sum() > 1
    none_present = [i for i in range(text.shape[0]) if not present[i]]
    with torch.no_grad():
        assert float(sls_region_loss(tower, images, cover, text, scale, 1,
                                     allowed=none_present)) == 0
        assert float(dense_region_loss(torch.randn(8, 64, 64), cover, text, scale,
                                       allowed=none_present)) == 0
        assert float(sls_region_loss(tower, images, cover, text, scale, 1)) > 0
    with pytest.raises(ValueError, match='allowed class indices'):
        sls_region_loss(tower, images, cover, text, scale, 1, allowed=[70])


@pytest.mark.slow
def test_sls_step_lowers_sls_region_loss():
    from open_clip.loss import ClipLoss
    model = build_clip(seed=0)
    tower = sls_tower(model, TINY_CLIP_NAME)
    images, tokens, cover, class_tokens = _batch(16)

    def sls_loss():
        with torch.no_grad():
            text = F.normalize(model.encode_text(class_tokens), dim=-1)
            return float(sls_region_loss(tower, images, cover, text, model.logit_scale.exp(), 1))

    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=2e-3)
    before = sls_loss()
    for _ in range(3):
        train_step(model, opt, ClipLoss(), images, tokens, cover=cover,
                   class_tokens=class_tokens, sls_weight=1.0, sls_split=1, sls_tower=tower)
    assert sls_loss() < before - 0.05, (before, sls_loss())
    with pytest.raises(ValueError, match='sls_tower'):
        train_step(model, opt, ClipLoss(), images, tokens, cover=cover,
                   class_tokens=class_tokens, sls_weight=1.0)
