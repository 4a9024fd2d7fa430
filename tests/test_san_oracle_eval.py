"""tools/misc/san_oracle_eval.py: its 'normal' mode is the model's own prediction (mmseg's
``predict``), the IoU bookkeeping is plain counting, and the oracle-mask mode names exactly the
ground-truth objects through SAN's recognition path."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ovseg  # noqa: F401
from tool_loader import load_tool

oracle = load_tool('misc/san_oracle_eval')


@pytest.fixture(scope='module')
def model():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    cfg = Config.fromfile('configs/san_tiny_synthetic.py').model
    cfg.pop('data_preprocessor')
    return MODELS.build(cfg).eval()


def test_patch_bias_keeps_covered_and_most_covered_patches():
    cover = torch.tensor([[0.3, 0.1, 0.0], [0.1, 0.2, 0.0]])
    bias = oracle.patch_bias(cover, heads=2)
    assert bias.shape == (1, 2, 2, 3)
    # >= 25 % kept; a mask covering no patch by 25 % keeps its most covered one
    assert bias[0, 0].tolist() == [[0.0, -100.0, -100.0], [-100.0, 0.0, -100.0]]


def test_normal_mode_is_the_models_prediction_and_ious_are_counts(model):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    gt = np.zeros((64, 64), np.int64)
    gt[8:30, 10:40], gt[40:60, 5:25] = 2, 5
    C = len(model.vocabulary)
    acc = oracle.OracleEval(model, C, unseen=[5])
    with torch.no_grad():
        preds = acc.add(x, gt, seen_obj=[c for c in range(1, C) if c != 5])
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                             pad_shape=(64, 64)))
        ref = model.predict(x, [sample])[0].pred_sem_seg.data[0].numpy()
    assert set(preds) == set(oracle.MODES)
    np.testing.assert_array_equal(preds['normal'], ref)
    for c in range(C):
        assert acc.inter['normal'][c] == ((ref == c) & (gt == c)).sum()
        assert acc.union['normal'][c] == ((ref == c) | (gt == c)).sum()
    # oracle masks: background given, each object one name -> constant on its pixels
    om = preds['oracle_mask']
    assert (om[gt == 0] == 0).all()
    for c in (2, 5):
        assert len(np.unique(om[gt == c])) == 1
    assert acc.named['seen'][1] == 1 and acc.named['unseen'][1] == 1
    assert acc.query['seen'][1] == 1 and acc.query['unseen'][1] == 1


def test_run_config_path_reads_either_work_dir_layout(tmp_path):
    """run_config.py (the ablation driver's) wins; else the one config tools/train.py dumps;
    an empty or ambiguous work dir is refused with the files it found."""
    with pytest.raises(FileNotFoundError, match=r'found: none'):
        oracle.run_config_path(str(tmp_path))
    (tmp_path / 'san_tiny_concepts.py').write_text('x = 1\n')
    assert oracle.run_config_path(str(tmp_path)) == str(tmp_path / 'san_tiny_concepts.py')
    (tmp_path / 'other.py').write_text('x = 2\n')
    with pytest.raises(FileNotFoundError, match=r'other\.py, san_tiny_concepts\.py'):
        oracle.run_config_path(str(tmp_path))
    (tmp_path / 'run_config.py').write_text('x = 3\n')
    assert oracle.run_config_path(str(tmp_path)) == str(tmp_path / 'run_config.py')
