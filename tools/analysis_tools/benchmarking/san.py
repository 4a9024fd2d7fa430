"""Our SAN against mmsegmentation's own SAN (``--against-mmseg-san``), and our CPU kernels
against the PyTorch ops they replace (``--kernels``)."""
import statistics
import sys

import torch

from .segmentor import predict_fn
from .timing import benchmark_models, interleaved_rounds

# Parity and quality limits the comparison enforces (exit status 1 when not met).
SAN_FP32_TOL = 1e-4  # max |seg_logits difference| in float32
SAN_BF16_ARGMAX_AGREEMENT = 0.995  # fraction of pixels whose bf16 argmax equals float32's


def against_mmseg_san(args) -> dict:
    """Our SAN (float32 and bf16 autocast) against mmseg 1.2.2's SAN with the same weights.

    mmseg's SAN is built from a random state (ViT-B/16, or tiny widths with ``--tiny``), its
    weights are converted to ours with ``tools/model_converters/mmseg_san2ovseg.py``, and all
    three run ``predict`` (whole inference, argmax) on the same input with the same threads:
    first one model after the other (median, min, peak memory), then in interleaved rounds
    (per-round ratios). The float32 scores must agree within ``SAN_FP32_TOL`` and the bf16
    argmax with float32's on ``SAN_BF16_ARGMAX_AGREEMENT`` of the pixels.
    """
    import tempfile

    import mmseg_san_reference as ref

    from mmseg_ovseg.clip.vocabularies import get_vocabulary
    classes = get_vocabulary(args.vocabulary)
    if args.tiny:
        mmseg_cfg, ours_cfg = ref.tiny_mmseg_san_cfg(classes), ref.tiny_ours_cfg()
    else:
        mmseg_cfg, ours_cfg = ref.mmseg_san_cfg(classes=classes), ref.ours_vitb16_cfg()
    mmseg_model = ref.build_mmseg_san(mmseg_cfg, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ours = ref.convert_and_load(mmseg_model, ours_cfg, tmp, classes)
    torch.manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, *args.shape)
    fn_ref, fn_ours = predict_fn(mmseg_model), predict_fn(ours)
    res = _time_san(fn_ref, fn_ours, x, args.warmup, args.runs)
    checks = _san_parity(fn_ref, fn_ours, x, args.tiny)
    name = 'tiny (bf16 agreement not enforced)' if args.tiny else 'ViT-B/16'
    print(f'SAN {name}, input {tuple(x.shape)}, '
          f'{len(classes)} classes (text cached), threads {torch.get_num_threads()}, '
          f'warmup {args.warmup}, runs/rounds {args.runs}')
    _print_san_table(res, checks)
    return dict(results=res, checks=checks, input_shape=list(x.shape),
                num_classes=len(classes), tiny=args.tiny)


def _time_san(fn_ref, fn_ours, x, warmup: int, runs: int) -> dict:
    """mmseg's SAN, ours in float32 and ours in bf16: one after the other, then interleaved."""
    res = benchmark_models({'mmseg SAN': fn_ref, 'ours fp32': fn_ours}, x, warmup, runs)
    res.update(benchmark_models({'ours bf16': fn_ours}, x, warmup, runs, bf16=True))
    rounds = interleaved_rounds({'mmseg SAN': (fn_ref, False), 'ours fp32': (fn_ours, False),
                                 'ours bf16': (fn_ours, True)}, x, runs)
    base = res['mmseg SAN']['median_ms']
    for name, r in res.items():
        r['ratio'] = r['median_ms'] / base
        r['interleaved_s'] = rounds[name]
        per_round = [a / b for a, b in zip(rounds[name], rounds['mmseg SAN'])]
        r['interleaved_ratios'] = per_round
        r['interleaved_ratio'] = statistics.median(per_round)
    return res


def _san_parity(fn_ref, fn_ours, x, tiny: bool) -> dict:
    """Float32 score difference and argmax agreements of the timed path's outputs."""
    with torch.no_grad():
        out_ref, out = fn_ref(x), fn_ours(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out16 = fn_ours(x)
    diff = max((o.seg_logits.data.float() - r.seg_logits.data).abs().max().item()
               for o, r in zip(out, out_ref))
    same = statistics.fmean((o.pred_sem_seg.data == r.pred_sem_seg.data).float().mean().item()
                            for o, r in zip(out, out_ref))
    same16 = statistics.fmean((a.pred_sem_seg.data == b.pred_sem_seg.data).float().mean().item()
                              for a, b in zip(out16, out))
    # A tiny random SAN predicts nearly constant maps whose top classes can tie to within
    # bf16 rounding, flipping all pixels at once: there only float32 parity is enforced.
    return dict(fp32_max_abs_diff=diff, fp32_argmax_agreement=same,
                bf16_argmax_agreement=same16,
                ok=diff < SAN_FP32_TOL and (tiny or same16 >= SAN_BF16_ARGMAX_AGREEMENT))


def _print_san_table(res: dict, checks: dict) -> None:
    print('| model | median s | min s | ratio (one after the other) | '
          'interleaved per-round ratio: median (range) | peak mem MB |')
    print('|---|---|---|---|---|---|')
    for name, r in res.items():
        lo, hi = min(r['interleaved_ratios']), max(r['interleaved_ratios'])
        print(f'| {name} | {r["median_ms"] / 1000:.3f} | {r["min_ms"] / 1000:.3f} | '
              f'{r["ratio"]:.3f} | {r["interleaved_ratio"]:.3f} ({lo:.2f}-{hi:.2f}) | '
              f'{r["peak_mem_mb"]:.0f} |')
    print(f'float32: max |seg_logits diff| {checks["fp32_max_abs_diff"]:.2e}, argmax equal on '
          f'{100 * checks["fp32_argmax_agreement"]:.3f}% of pixels; bf16: argmax equal to '
          f'float32 on {100 * checks["bf16_argmax_agreement"]:.3f}% of pixels')
    if not checks['ok']:
        print(f'FAILED: float32 diff must be < {SAN_FP32_TOL} and bf16 argmax agreement >= '
              f'{SAN_BF16_ARGMAX_AGREEMENT}', file=sys.stderr)


# ------------------------------------------------- kernels against PyTorch's defaults
def kernel_comparison(args) -> dict:
    """Our CPU kernels against the PyTorch op they replace, at SAN ViT-B/16's shapes.

    - bf16 attention: :func:`mmseg_ovseg.models.layers.fast_path.blocked_attention` against
      ``scaled_dot_product_attention`` (side adapter: 1700 tokens, 6 heads of 40; CLIP at half
      scale: 401 tokens, 12 heads of 64);
    - float32 linear: ``torch.ops.mkldnn._linear_pointwise`` on a weight reordered once (what
      ``CLIPVisionTransformer._linear`` runs in float32 inference) against ``F.linear``
      (CLIP ViT-B's MLP and qkv at 401 tokens).

    Each pair runs in ``--runs`` interleaved rounds; reported: medians, the median per-round
    ratio (ours / PyTorch's) and the max |difference| of the outputs.
    """
    import torch.nn.functional as F

    from mmseg_ovseg.models.layers.fast_path import blocked_attention
    div = 8 if args.tiny else 1
    g = torch.Generator().manual_seed(args.seed)

    def attn_case(n, heads, dim):
        q, k, v = (torch.randn(1, heads, n // div, dim, generator=g).bfloat16()
                   for _ in range(3))
        return (lambda: F.scaled_dot_product_attention(q, k, v),
                lambda: blocked_attention(q, k, v))

    def linear_case(n, c_in, c_out):
        x = torch.randn(n // div, c_in // div, generator=g)
        w = torch.randn(c_out // div, c_in // div, generator=g) * c_in**-0.5
        b = torch.randn(c_out // div, generator=g)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
        return (lambda: F.linear(x, w, b),
                lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, 'none', [], ''))

    cases = {
        'attention bf16, side adapter (1700 tok, 6x40)': attn_case(1700, 6, 40),
        'attention bf16, CLIP ViT-B/16 @320 (401 tok, 12x64)': attn_case(401, 12, 64),
        'linear fp32, CLIP MLP c_fc (401 x 768 -> 3072)': linear_case(401, 768, 3072),
        'linear fp32, CLIP qkv (401 x 768 -> 2304)': linear_case(401, 768, 2304),
    }
    report = {}
    print(f'threads {torch.get_num_threads()}, {args.runs} interleaved rounds'
          f'{" (tiny shapes)" if args.tiny else ""}')
    print('| kernel | PyTorch ms | ours ms | ratio (per-round median) | max abs diff |')
    print('|---|---|---|---|---|')
    with torch.no_grad():
        for name, (base, ours) in cases.items():
            diff = (ours().float() - base().float()).abs().max().item()
            times = interleaved_rounds({'base': (lambda _: base(), False),
                                        'ours': (lambda _: ours(), False)}, None, args.runs,
                                       device='cpu')
            ratio = statistics.median(a / b for a, b in zip(times['ours'], times['base']))
            row = dict(base_ms=1000 * statistics.median(times['base']),
                       ours_ms=1000 * statistics.median(times['ours']), ratio=ratio,
                       max_abs_diff=diff)
            report[name] = row
            print(f'| {name} | {row["base_ms"]:.2f} | {row["ours_ms"]:.2f} | {ratio:.3f} | '
                  f'{diff:.2e} |')
    return dict(kernels=report, tiny=args.tiny)
