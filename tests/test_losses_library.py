"""The loss helpers delegate to installed libraries (mmcv, mmseg, torchvision).

Each wrapper is checked against the library function it calls (bit-equal, same RNG stream)
and against values computed by hand, so neither a wrong delegation nor a library change
passes unnoticed.
"""
import math

import pytest
import torch

from mmseg_ovseg.models.losses.focal_loss import sigmoid_focal_loss
from mmseg_ovseg.models.losses.point_sampling import point_sample, sample_uncertain_points


# ---------------------------------------------------------------------- point_sample
def test_point_sample_is_mmcv_point_sample():
    from mmcv.ops import point_sample as mmcv_point_sample
    g = torch.Generator().manual_seed(0)
    maps, pts = torch.randn(3, 2, 9, 6, generator=g) * 5, torch.rand(3, 40, 2, generator=g)
    for align_corners in (False, True):
        assert torch.equal(point_sample(maps, pts, align_corners),
                           mmcv_point_sample(maps, pts, align_corners=align_corners))
    # coordinates follow the maps' dtype (grid_sample needs equal dtypes)
    assert point_sample(maps.double(), pts).dtype == torch.float64


def test_point_sample_hand_computed():
    x = torch.tensor([[1., 2.], [3., 4.]]).view(1, 1, 2, 2)
    # (x, y) in [0, 1]; align_corners=False: pixel centres at 0.25 / 0.75, zeros outside
    coords = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75],
                            [0.5, 0.5], [0.5, 0.25], [0.25, 0.5], [0.0, 0.0], [1.0, 0.75]]])
    expected = [1., 2., 3., 4.,
                2.5,  # mean of the four
                1.5,  # halfway between 1 and 2 along x
                2.0,  # halfway between 1 and 3 along y
                0.25,  # corner: 1/4 weight on pixel (0, 0), 3/4 on zero padding
                2.0]  # right border at the second row: 1/2 x 4
    assert torch.allclose(point_sample(x, coords)[0, 0], torch.tensor(expected))
    with pytest.raises(ValueError, match=r'point_sample.*\(1, 2, 2\)'):
        point_sample(x[0], coords)
    with pytest.raises(ValueError, match=r'point_sample.*\(1, 9, 3\)'):
        point_sample(x, torch.rand(1, 9, 3))


# ---------------------------------------------------------------------- uncertain points
def test_uncertain_points_are_mmseg_sampler_with_same_rng():
    from mmseg.models.utils import get_uncertain_point_coords_with_randomness
    logits = torch.randn(4, 1, 16, 12) * 3
    for num, over, ratio in ((100, 3.0, 0.75), (37, 2.5, 1.0), (20, 1.0, 0.0)):
        torch.manual_seed(3)
        ours = sample_uncertain_points(logits, num, over, ratio)
        torch.manual_seed(3)
        ref = get_uncertain_point_coords_with_randomness(logits, None, num, over, ratio)
        assert ours.shape == (4, num, 2)
        assert torch.equal(ours, ref)


def _bilinear_zero_padded(img, x, y):
    """Hand-written bilinear sample of a 2D list at normalised (x, y), align_corners=False."""
    h, w = len(img), len(img[0])
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    val = 0.0
    for yi, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xi, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yi < h and 0 <= xi < w:
                val += wx * wy * img[yi][xi]
    return val


def test_uncertain_points_hand_computed():
    img = [[-4., -1., 2., 6.], [-3., 0.5, 3., 5.], [1., 2., -2., 8.]]
    logits = torch.tensor(img).view(1, 1, 3, 4)
    num, over, ratio = 3, 4.0, 2 / 3  # 12 candidates, 2 most uncertain + 1 random
    torch.manual_seed(7)
    candidates = torch.rand(1, 12, 2)
    fresh = torch.rand(1, 1, 2)
    uncertainty = [-abs(_bilinear_zero_padded(img, float(cx), float(cy)))
                   for cx, cy in candidates[0]]
    best = sorted(range(12), key=lambda i: -uncertainty[i])[:2]
    torch.manual_seed(7)
    coords = sample_uncertain_points(logits, num, over, ratio)
    assert torch.equal(coords[0, :2], candidates[0, best])
    assert torch.equal(coords[0, 2:], fresh[0])


def test_uncertain_points_errors():
    logits = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match='oversample_ratio'):
        sample_uncertain_points(logits, 10, oversample_ratio=0.5)
    with pytest.raises(ValueError, match='importance_sample_ratio'):
        sample_uncertain_points(logits, 10, importance_sample_ratio=1.5)
    with pytest.raises(ValueError, match=r'\(N, 1, H, W\).*\(2, 3, 4, 4\)'):
        sample_uncertain_points(torch.zeros(2, 3, 4, 4), 10)


# ---------------------------------------------------------------------- focal loss
def test_focal_is_torchvision_and_paper_formula():
    from torchvision.ops import sigmoid_focal_loss as tv_focal
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 5, 300, generator=g) * 4
    target = (torch.rand(2, 5, 300, generator=g) > 0.7).float()
    for alpha, gamma in ((0.25, 2.0), (0.5, 0.0), (1.0, 3.0), (-1, 2.0)):
        ours = sigmoid_focal_loss(pred, target, alpha, gamma)
        assert torch.equal(ours, tv_focal(pred, target, alpha, gamma, reduction='none'))
        # RetinaNet Eq. 5 by another route: -alpha_t (1 - p_t)^gamma log(p_t) from probabilities
        p = pred.double().sigmoid()
        p_t = torch.where(target.bool(), p, 1 - p)
        alpha_t = (torch.where(target.bool(), alpha, 1 - alpha) if alpha >= 0
                   else torch.ones_like(p))
        paper = -alpha_t * (1 - p_t) ** gamma * p_t.log()
        assert torch.allclose(ours.double(), paper, rtol=1e-5, atol=1e-6)
    # any negative alpha means "no weighting" (torchvision accepts only -1)
    assert torch.equal(sigmoid_focal_loss(pred, target, -0.3), sigmoid_focal_loss(pred, target, -1))


def test_focal_hand_computed_and_errors():
    pred, target = torch.zeros(2), torch.tensor([1., 0.])
    # p = 0.5: positive 0.25 * 0.5^2 * ln 2, negative 0.75 * 0.5^2 * ln 2
    expected = torch.tensor([0.25, 0.75]) * 0.25 * math.log(2)
    assert torch.allclose(sigmoid_focal_loss(pred, target), expected)
    # integer / bool targets are cast to the logits' dtype
    assert torch.equal(sigmoid_focal_loss(pred, target.bool()), sigmoid_focal_loss(pred, target))
    with pytest.raises(ValueError, match=r'\(2,\) and target \(3,\)'):
        sigmoid_focal_loss(pred, torch.zeros(3))
    with pytest.raises(ValueError, match='alpha'):
        sigmoid_focal_loss(pred, target, alpha=1.5)
