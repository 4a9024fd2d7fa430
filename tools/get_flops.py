"""FLOPs and parameter count of a segmentor (mmengine.analysis).

    python tools/get_flops.py CONFIG [--shape 512 512] [--mode tensor|predict] [--table]

Counts one image of ``--shape`` through ``model._forward`` (backbone + heads, the default) or
``model.predict`` (adds slide/whole inference and resizing). The class text embeddings are
computed (and cached) before counting, so the text tower is not included: it runs once per
vocabulary, not per image. mmengine counts one fused multiply-add as one FLOP.
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

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


def get_flops(config, shape=(512, 512), mode: str = 'tensor', checkpoint=None,
              cfg_options=None) -> dict:
    """Return ``dict(flops, params, flops_str, params_str, table)`` for one image."""
    from mmengine.analysis import get_model_complexity_info
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from benchmark import build_segmentor

    model = build_segmentor(config, checkpoint, 'cpu', cfg_options)
    inputs = torch.randn(1, 3, *shape)
    wrapper = _Wrapper(model, mode).eval()
    with torch.no_grad():
        wrapper(inputs)  # fills the text-embedding cache, checks the model runs
        info = get_model_complexity_info(wrapper, inputs=(inputs, ), show_table=True,
                                         show_arch=False)
    return dict(flops=info['flops'], params=info['params'],
                flops_str=_human(info['flops'], 'FLOPs'), params_str=_human(info['params'], ''),
                table=info['out_table'])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='FLOPs of a segmentor')
    parser.add_argument('config')
    parser.add_argument('--checkpoint', default=None)
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--mode', choices=['tensor', 'predict'], default='tensor')
    parser.add_argument('--table', action='store_true', help='print the per-module table')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    res = get_flops(args.config, tuple(args.shape), args.mode, args.checkpoint)
    if args.table:
        print(res['table'])
    split = '=' * 40
    print(f'{split}\nInput shape: (1, 3, {args.shape[0]}, {args.shape[1]})  mode: {args.mode}\n'
          f'Flops: {res["flops_str"]}\nParams: {res["params_str"]}\n{split}')
    print('Text-tower FLOPs are not included (embeddings are cached per vocabulary).')
    return res


if __name__ == '__main__':
    main()
