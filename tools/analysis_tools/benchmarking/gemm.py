"""GEMM throughput per precision at SAN ViT-B/16's linear shapes (``benchmark.py --gemm``).

Why: the bfloat16 target of the SAN benchmark (ours under bf16 autocast <= 0.35x of mmseg's
float32 SAN) can only be met where bf16 matrix products run faster than float32 ones (CPUs
with AMX, GPUs). On a CPU whose bf16 GEMMs are slower than its float32 GEMMs the bf16 model
cannot beat the float32 one, whatever the model code does; this mode measures that directly,
with no model around it, so the claim can be checked on any machine.

Per shape, in interleaved rounds (the order rotated each round): ``F.linear`` in float32
(MKL's sgemm), the oneDNN inner product on a weight reordered once (our float32 fast path),
``F.linear`` in bfloat16 (oneDNN) and in float16. Reported: median ms, GFLOP/s
(``2 * M * K * N`` per product) and each rate relative to float32 ``F.linear`` in the same
rounds, plus torch's CPU capability (``torch.backends.cpu.get_cpu_capability()``; the ISA
of oneDNN's own kernels is what ``ONEDNN_VERBOSE=1`` prints, e.g. ``avx512_core_bf16``).
"""
import statistics
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F

from .timing import interleaved_rounds

# (tokens, in, out): CLIP ViT-B/16 at SAN's 320 px (401 tokens) and the side adapter at 640 px
# (1600 patches + 100 queries, width 240).
SAN_GEMM_SHAPES = {
    'CLIP qkv (401 x 768 -> 2304)': (401, 768, 2304),
    'CLIP MLP c_fc (401 x 768 -> 3072)': (401, 768, 3072),
    'CLIP MLP c_proj (401 x 3072 -> 768)': (401, 3072, 768),
    'side adapter MLP (1700 x 240 -> 960)': (1700, 240, 960),
}


def _variants(m: int, k: int, n: int, g: torch.Generator) -> Dict[str, Callable]:
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g) * k**-0.5
    b = torch.randn(n, generator=g)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
    x16, w16, b16 = x.bfloat16(), w.bfloat16(), b.bfloat16()
    xh, wh, bh = x.half(), w.half(), b.half()
    return {
        'fp32 F.linear': lambda: F.linear(x, w, b),
        'fp32 oneDNN prepacked': lambda: torch.ops.mkldnn._linear_pointwise(
            x, packed, b, 'none', [], ''),
        'bf16 F.linear': lambda: F.linear(x16, w16, b16),
        'fp16 F.linear': lambda: F.linear(xh, wh, bh),
    }


def gemm_rates(args) -> dict:
    """Time the four GEMM variants at each of :data:`SAN_GEMM_SHAPES` (``--tiny``: /8).

    Returns:
        dict: ``shapes: {name: {variant: {ms, gflops, rate_vs_fp32}}}``, ``isa`` (torch's CPU
        capability string), ``summary: {variant: median rate_vs_fp32 over the shapes}``.
    """
    div = 8 if args.tiny else 1
    g = torch.Generator().manual_seed(args.seed)
    isa = torch.backends.cpu.get_cpu_capability()
    print(f'threads {torch.get_num_threads()}, {args.runs} interleaved rounds, CPU capability '
          f'{isa}{" (tiny shapes)" if args.tiny else ""}')
    print('| GEMM | variant | ms | GFLOP/s | rate vs fp32 F.linear |')
    print('|---|---|---|---|---|')
    shapes: Dict[str, Dict[str, dict]] = {}
    with torch.no_grad():
        for name, (m, k, n) in SAN_GEMM_SHAPES.items():
            m, k, n = m // div, k // div, n // div
            fns = _variants(m, k, n, g)
            models: Dict[str, Tuple[Callable, bool]] = {
                v: ((lambda _, f=f: f()), False) for v, f in fns.items()}
            times = interleaved_rounds(models, None, args.runs, device='cpu')
            flop = 2.0 * m * k * n
            rows = {}
            for v, ts in times.items():
                rate = statistics.median(b / a for a, b in zip(ts, times['fp32 F.linear']))
                sec = statistics.median(ts)
                rows[v] = dict(ms=1000 * sec, gflops=flop / sec / 1e9, rate_vs_fp32=rate)
                print(f'| {name} | {v} | {rows[v]["ms"]:.2f} | {rows[v]["gflops"]:.0f} | '
                      f'{rate:.2f} |')
            shapes[name] = rows
    variants = next(iter(shapes.values())).keys()
    summary = {v: statistics.median(r[v]['rate_vs_fp32'] for r in shapes.values())
               for v in variants}
    print('median rate vs fp32 F.linear: ' +
          ', '.join(f'{v} {r:.2f}' for v, r in summary.items()))
    return dict(shapes=shapes, isa=isa, summary=summary, tiny=args.tiny)
