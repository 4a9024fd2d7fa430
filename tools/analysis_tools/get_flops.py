"""FLOPs and parameter count of a segmentor (mmengine.analysis ``FlopAnalyzer``).

    python tools/analysis_tools/get_flops.py CONFIG [--shape 512 512] [--mode tensor|predict]
                              [--table]
                              [--cfg-options KEY=VALUE ...]

The model is built without reading the CLIP weight files (they are loaded by
``init_weights``, which FLOP counting does not need), so full-size configs work without them.

Counts one image of ``--shape`` through ``model._forward`` (backbone + heads, the default) or
``model.predict`` (adds slide/whole inference and resizing). The class text embeddings are
computed (and cached) before counting, so the text tower is not included: it runs once per
vocabulary, not per image. mmengine counts one fused multiply-add as one FLOP; attention
(``scaled_dot_product_attention``, which mmengine 0.10.7 skips) is counted by our handle.
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


class _Wrapper(nn.Module):
    """Exposes one segmentor path as ``forward(inputs)`` for the tracer."""

    def __init__(self, model, mode: str):
        super().__init__()
        self.model = model
        self.mode = mode

    def forward(self, inputs):
        if self.mode == 'tensor':
            return self.model._forward(inputs)
        from mmseg.structures import SegDataSample
        h, w = inputs.shape[-2:]
        samples = [SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                               pad_shape=(h, w), padding_size=[0, 0, 0, 0]))]
        return self.model.predict(inputs, samples)[0].seg_logits.data


def _human(n: float, unit: str) -> str:
    for scale, prefix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if n >= scale:
            return f'{n / scale:.3g} {prefix}{unit}'.strip()
    return f'{n:.0f} {unit}'.strip()


def sdpa_flop_jit(inputs, outputs) -> int:
    """Multiply-adds of ``aten::scaled_dot_product_attention`` (q k^T and attn v).

    mmengine 0.10.7 has no handle for it, and leaving it out would drop every attention
    matmul of the CLIP ViT (open_clip uses ``F.scaled_dot_product_attention``).
    """
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = int(np.prod(q[:-2]))
    lq, e = q[-2], q[-1]
    lk, ev = k[-2], v[-1]
    return batch * lq * lk * (e + ev)


def get_flops(config, shape=(512, 512), mode: str = 'tensor', checkpoint=None,
              cfg_options=None) -> dict:
    """Return ``dict(flops, params, flops_str, params_str, table, unsupported)`` for one
    image of ``shape``; ``unsupported`` counts the ops mmengine could not count."""
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.analysis.print_helper import complexity_stats_table
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from benchmark import build_segmentor
    from mmengine.config import Config

    from mmseg_ovseg.apis.config import merge_cfg_options
    if isinstance(config, str):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file not found: {config}')
        config = Config.fromfile(config)
    # clip_pretrained=X reaches every CLIP tower; the CLIP files are not read (no
    # init_weights): FLOPs do not depend on the weights
    config = merge_cfg_options(config, cfg_options)
    model = build_segmentor(config, checkpoint, 'cpu')
    inputs = torch.randn(1, 3, *shape)
    wrapper = _Wrapper(model, mode).eval()
    with torch.no_grad():
        wrapper(inputs)  # fills the text-embedding cache, checks the model runs
        analyzer = FlopAnalyzer(wrapper, (inputs, ))
        analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
        table = complexity_stats_table(analyzer, max_depth=4, show_param_shapes=False)
        unsupported = dict(analyzer.unsupported_ops())
    params = parameter_count(wrapper)['']
    return dict(flops=flops, params=params, flops_str=_human(flops, 'FLOPs'),
                params_str=_human(params, ''), table=table, unsupported=unsupported)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='FLOPs of a segmentor')
    parser.add_argument('config')
    parser.add_argument('--checkpoint', default=None)
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--mode', choices=['tensor', 'predict'], default='tensor')
    parser.add_argument('--table', action='store_true', help='print the per-module table')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys (key=value), e.g. '
                        'model.test_cfg.mode=whole')
    parser.add_argument('--debug', action='store_true',
                        help='on an error, print the full traceback (default: one line)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    res = get_flops(args.config, tuple(args.shape), args.mode, args.checkpoint,
                    args.cfg_options)
    if args.table:
        print(res['table'])
    split = '=' * 40
    print(f'{split}\nInput shape: (1, 3, {args.shape[0]}, {args.shape[1]})  mode: {args.mode}\n'
          f'Flops: {res["flops_str"]}\nParams: {res["params_str"]}\n{split}')
    print('Text-tower FLOPs are not included (embeddings are cached per vocabulary).')
    if res['unsupported']:
        print('Not counted (no FLOP handle, mostly element-wise/norm ops): ' +
              ', '.join(f'{k} x{v}' for k, v in sorted(res['unsupported'].items())))
    return res


if __name__ == '__main__':
    from mmseg_ovseg.utils.cli import run_cli
    sys.exit(run_cli(main, 'get_flops.py'))
