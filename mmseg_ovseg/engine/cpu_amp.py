"""Mixed precision for CPU training: bfloat16 autocast through mmengine's optimizer wrapper.

mmengine 0.10.7's ``AmpOptimWrapper`` refuses to run without a CUDA/NPU/MLU/MUSA device, so
``--amp`` (and AMP configs such as SAN's paper recipe) cannot train on a CPU node. bfloat16 has
float32's exponent range, so no loss scaling is needed: autocast around the forward is enough.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose ``optim_context`` runs the forward under
    ``torch.autocast('cpu', dtype=torch.bfloat16)``.

    Accepts (and ignores) ``loss_scale`` so a GPU AMP config can switch to it unchanged.
    """

    def __init__(self, *args, loss_scale=None, dtype: str = 'bfloat16', **kwargs):
        super().__init__(*args, **kwargs)
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f"dtype must be 'bfloat16' or 'float16', got {dtype!r}")
        self.cast_dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
