"""Shared pieces of the mask-classification losses and heads (SAN, SegViT).

- ``losses/mask_cls_utils.py``: the no-object cross-entropy and the mask-count normaliser,
  checked against their formulas and, with a faked two-rank run, against the rank average;
- numerics unchanged by moving :class:`MaskClassificationLoss` and :class:`ATMLoss` onto them:
  ``fixtures/mask_cls_losses_pre_refactor.json`` holds the losses and gradient sums the code of
  commit 8c91994 (before the move) gave on the inputs :func:`compute_all` builds here; the
  generation ran that commit's loss files (``git show``) in a separate process (see the
  fixture's ``how``);
- one aux-loss naming for the mask-classification heads: auxiliary outputs first, the final one
  last and unprefixed, auxiliary losses prefixed ``d{i}.`` (mmseg's SAN and Mask2Former).

Module-level imports stay off ``mmseg_ovseg`` so the fixture generator can import
:func:`compute_all` next to the old loss classes.
"""
import json
import os.path as osp

import pytest
import torch
from mmengine.structures import InstanceData, PixelData
from mmseg.structures import SegDataSample

FIXTURE = osp.join(osp.dirname(osp.abspath(__file__)), 'fixtures',
                   'mask_cls_losses_pre_refactor.json')


# ---------------------------------------------------------------------- fixed cases
def _gt_instances(g, num_classes, num_gts, size):
    """Random binary masks of ``num_gts`` distinct classes at ``size``."""
    labels = torch.randperm(num_classes, generator=g)[:num_gts]
    masks = (torch.rand(num_gts, *size, generator=g) > 0.6).long()
    return InstanceData(labels=labels, masks=masks)


def _label_map(g, num_classes, size, ignore_frac=0.1, ignore_index=255):
    label = torch.randint(0, num_classes, size, generator=g)
    label[torch.rand(size, generator=g) < ignore_frac] = ignore_index
    return label


def _run(loss, args, kwargs=None, seed=0):
    """Losses and gradient sums (float) of one call; ``seed`` fixes the loss's own draws."""
    cls, masks = (a.clone().requires_grad_(True) for a in args[:2])
    torch.manual_seed(seed)
    out = loss(cls, masks, *args[2:], **(kwargs or {}))
    sum(out.values()).backward()
    record = {k: v.item() for k, v in out.items()}
    record['grad.cls'] = cls.grad.abs().sum().item()
    record['grad.mask'] = masks.grad.abs().sum().item()
    return record


def compute_all(mask_classification_loss, atm_loss):
    """Fixed-input cases of both losses, given their classes; ``{case: {key: value}}``."""
    g = torch.Generator().manual_seed(20261130)
    out = {}
    # SAN's Hungarian loss: B=3, Q=6, K=4; an image without masks; gts at twice the size.
    cls, masks = torch.randn(3, 6, 5, generator=g) * 3, torch.randn(3, 6, 12, 10, generator=g) * 4
    gts = [_gt_instances(g, 4, 2, (24, 20)), _gt_instances(g, 4, 0, (24, 20)),
           _gt_instances(g, 4, 3, (24, 20))]
    out['san_default'] = _run(mask_classification_loss(num_points=256), (cls, masks, gts), seed=1)
    out['san_weights'] = _run(
        mask_classification_loss(num_points=128, loss_cls_weight=1.5, no_object_weight=0.3,
                                 oversample_ratio=2.0, importance_sample_ratio=0.5),
        (cls, masks, gts), seed=2)
    empty = [_gt_instances(g, 4, 0, (24, 20))] * 3
    out['san_empty'] = _run(mask_classification_loss(num_points=64), (cls, masks, empty), seed=3)
    # SegViT's ATM loss: B=2, C=5; masks upsampled 6x6 -> 12x12, ignored pixels.
    cls, masks = torch.randn(2, 5, 6, generator=g) * 3, torch.randn(2, 5, 6, 6, generator=g) * 4
    label = _label_map(g, 3, (2, 12, 12))  # classes 3, 4 absent
    out['atm_default'] = _run(atm_loss(), (cls, masks, label), dict(ignore_index=255))
    out['atm_exclude_ignored'] = _run(atm_loss(exclude_ignored=True, no_object_weight=0.2),
                                      (cls, masks, label), dict(ignore_index=255))
    full = _label_map(g, 5, (2, 6, 6), ignore_frac=0.0)
    out['atm_same_size_no_ignore'] = _run(atm_loss(loss_cls_weight=2.0, loss_mask_weight=5.0),
                                          (cls, masks, full), dict(ignore_index=None))
    out['atm_all_ignored'] = _run(atm_loss(), (cls, masks, torch.full_like(label, 255)),
                                  dict(ignore_index=255))
    return out


def test_losses_equal_the_pre_refactor_code():
    from mmengine.registry import init_default_scope

    import mmseg_ovseg  # noqa: F401
    from mmseg_ovseg.models.losses import ATMLoss, MaskClassificationLoss
    init_default_scope('mmseg')
    with open(FIXTURE) as f:
        expected = json.load(f)['values']
    got = compute_all(MaskClassificationLoss, ATMLoss)
    assert got.keys() == expected.keys()
    for case, values in expected.items():
        assert list(got[case]) == list(values), case  # same keys, same order
        for key, value in values.items():
            # float32 on CPU: bit-equal on the machine that recorded it, 1 ulp allowed elsewhere
            assert got[case][key] == pytest.approx(value, rel=1.2e-7, abs=1e-7), (case, key)
    # not vacuous: the cases exercise the mask terms and distinct weights
    assert expected['san_default']['loss_mask_dice'] > 0.1
    assert expected['atm_default']['loss_mask'] != expected['atm_exclude_ignored']['loss_mask']


# ---------------------------------------------------------------------- helpers
def test_no_object_cross_entropy_is_the_weighted_mean():
    from mmseg_ovseg.models.losses.mask_cls_utils import no_object_cross_entropy
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, generator=g)
    labels = torch.tensor([[3, 0, 3], [2, 3, 1]])
    loss = no_object_cross_entropy(logits, labels, 0.1)
    logp = logits.log_softmax(-1).flatten(0, 1)
    w = torch.tensor([0.1, 1, 0.1, 1, 0.1, 1])  # weight of each target: 0.1 for class 3
    nll = -logp[torch.arange(6), labels.flatten()]
    torch.testing.assert_close(loss, (w * nll).sum() / w.sum())
    with pytest.raises(ValueError, match=r'labels \(2, 4\) .* logits \(2, 3, 4\)'):
        no_object_cross_entropy(logits, labels.new_zeros(2, 4), 0.1)


def test_num_masks_is_averaged_over_ranks_and_at_least_one(monkeypatch):
    from mmseg_ovseg.models.losses import mask_cls_utils
    assert mask_cls_utils.average_num_masks(7, 'cpu') == 7.0
    assert mask_cls_utils.average_num_masks(torch.tensor(0), 'cpu') == 1.0
    # a fake second rank holding 2 masks: every rank divides by the mean
    calls = []

    def fake_all_reduce(t, op):
        calls.append(op)
        t.copy_((t + 2) / 2)
    monkeypatch.setattr(mask_cls_utils, 'get_world_size', lambda: 2)
    monkeypatch.setattr(mask_cls_utils, 'all_reduce', fake_all_reduce)
    count = torch.tensor(5)
    assert mask_cls_utils.average_num_masks(count, 'cpu') == 3.5
    assert count == 5  # the caller's count is not reduced in place
    assert mask_cls_utils.average_num_masks(0, 'cpu') == 1.0
    assert calls == ['mean', 'mean']


# ---------------------------------------------------------------------- heads
class _SumLoss(torch.nn.Module):
    """Stands for the head's loss: sums of its class and mask logits."""

    def forward(self, cls, masks, *args, **kwargs):
        return {'loss_a': cls.sum(), 'loss_b': masks.sum()}


def test_atm_head_names_aux_losses_d_i_with_the_final_output_last():
    import mmseg_ovseg  # noqa: F401
    from mmseg_ovseg.models.decode_heads.atm_head import ATMHead
    head = ATMHead(in_channels=8, num_classes=3, embed_dims=8, num_heads=2, num_layers=1,
                   use_stages=3)
    head.loss_decode = _SumLoss()
    cls = [torch.full((1, 3, 4), float(i)) for i in range(3)]
    masks = [torch.full((1, 3, 2, 2), float(i)) for i in range(3)]
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.zeros(1, 4, 4, dtype=torch.long)))
    losses = head.loss_by_feat((cls, masks), [sample])
    assert list(losses) == ['d0.loss_a', 'd0.loss_b', 'd1.loss_a', 'd1.loss_b',
                            'loss_a', 'loss_b']
    assert losses['loss_a'] == 2 * 12 and losses['d0.loss_a'] == 0  # final = last output


def test_san_head_names_aux_losses_d_i_with_the_final_output_last():
    import mmseg_ovseg  # noqa: F401
    from mmseg_ovseg.models.decode_heads.san_head import SANHead
    head = SANHead(num_classes=3, side_adapter=dict(
        embed_dims=16, depth=4, num_heads=2, patch_size=8, num_queries=3, pos_grid=(2, 2),
        clip_channels=8, fusion_index=(0, ), mlp_ratio=2),
        mask_decoder=dict(embed_channels=8, mlp_channels=8),
        bias_decoder=dict(num_heads=2, embed_channels=8, mlp_channels=8),
        text_channels=8, deep_supervision_idxs=(1, 3))
    head.loss_decode = _SumLoss()
    masks = [torch.full((1, 3, 2, 2), float(i)) for i in range(3)]
    cls = [torch.full((1, 3, 4), float(i)) for i in range(3)]
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.zeros(1, 4, 4, dtype=torch.long)))
    losses = head.loss_by_feat((cls, masks), [sample])
    # SAN numbers its auxiliary outputs by side block, as mmseg's SAN head (d1, d3)
    assert list(losses) == ['d1.loss_a', 'd1.loss_b', 'd3.loss_a', 'd3.loss_b',
                            'loss_a', 'loss_b']
    assert losses['loss_a'] == 2 * 12 and losses['d1.loss_a'] == 0
