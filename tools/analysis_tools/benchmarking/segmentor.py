"""Segmentors as timed callables: build one from a config, wrap its ``predict``, tabulate."""
import os.path as osp
from typing import Callable, Dict, Optional, Sequence


def build_segmentor(config, checkpoint: Optional[str] = None, device: str = 'cpu',
                    cfg_options: Optional[dict] = None):
    """Build the config's segmentor in eval mode (weights from ``checkpoint`` if given)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_ovseg  # noqa: F401  (registries, safe checkpoint globals)
    from mmseg_ovseg.utils.dist import check_device
    from mmseg_ovseg.utils.load_guard import load_checkpoint_checked, resolve_checkpoint_path
    check_device(device)
    if isinstance(config, str) and not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if checkpoint is not None:
        checkpoint = resolve_checkpoint_path(checkpoint)
    cfg.model.train_cfg = None
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:  # must fit the model, finite weights (load_guard)
        load_checkpoint_checked(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def predict_fn(model, mode: str = 'predict') -> Callable:
    """``fn(inputs)`` for :func:`benchmark_models`: ``inputs`` is a normalised (B, 3, H, W).

    ``'predict'`` times the whole test-time path (slide/whole inference, resize to the input
    size, argmax); ``'tensor'`` times ``model._forward`` (raw head outputs).
    """
    if mode == 'tensor':
        return lambda inputs: model._forward(inputs)
    if mode != 'predict':
        raise ValueError(f"mode must be 'predict' or 'tensor', got {mode!r}")
    from mmseg.structures import SegDataSample

    def fn(inputs):
        h, w = inputs.shape[-2:]
        samples = [
            SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                        padding_size=[0, 0, 0, 0]))
            for _ in range(inputs.shape[0])
        ]
        return model.predict(inputs, samples)

    return fn


def markdown_rows(results: Dict[str, dict], shape: Sequence[int],
                  reference: Optional[str] = None) -> str:
    lines = ['| model | input | threads | bf16 | median ms | min ms | peak mem MB | ratio |',
             '|---|---|---|---|---|---|---|---|']
    ref = results[reference]['median_ms'] if reference else None
    for name, r in results.items():
        ratio = f'{r["median_ms"] / ref:.2f}' if ref else '-'
        lines.append(f'| {name} | {"x".join(map(str, shape))} | {r["threads"]} | '
                     f'{r["bf16"]} | {r["median_ms"]:.1f} | {r["min_ms"]:.1f} | '
                     f'{r["peak_mem_mb"]:.1f} | {ratio} |')
    return '\n'.join(lines)

