"""The pieces of ``tools/analysis_tools/benchmark.py``: timing and memory (``timing``),
segmentors as timed callables (``segmentor``), our SAN against mmseg's and our CPU kernels
against PyTorch's (``san``), GEMM throughput per precision (``gemm``), and the CLI on one
large image (``large_image``)."""
from .gemm import SAN_GEMM_SHAPES, gemm_rates
from .large_image import LARGE_IMAGE_VARIANTS, large_image, large_image_worker
from .san import SAN_BF16_ARGMAX_AGREEMENT, SAN_FP32_TOL, against_mmseg_san, kernel_comparison
from .segmentor import build_segmentor, markdown_rows, predict_fn
from .timing import benchmark_models, interleaved_rounds

__all__ = [
    'LARGE_IMAGE_VARIANTS', 'SAN_BF16_ARGMAX_AGREEMENT', 'SAN_FP32_TOL', 'SAN_GEMM_SHAPES',
    'against_mmseg_san', 'benchmark_models', 'build_segmentor', 'gemm_rates',
    'interleaved_rounds', 'kernel_comparison', 'large_image', 'large_image_worker',
    'markdown_rows', 'predict_fn'
]
