"""Weight initialisation shared by the heads and necks.

Every head/neck of the package that is not initialised by its own paper-specific rule uses the
ViT scheme: ``nn.Linear`` weights truncated normal (``std``, bounds +-2 absolute) with zero
biases, ``nn.LayerNorm`` weight 1 and bias 0. Two samplers draw that distribution and give
different values under one seed, so the choice is explicit to keep each model's initial
weights exactly as they were:

- ``'torch'``: ``torch.nn.init.trunc_normal_`` (ReSTR's encoders, DenseCLIP's context decoder
  and pre-model prompting);
- ``'mmengine'``: ``mmengine.model.weight_init.trunc_normal_`` (the inverse-CDF sampler of
  timm; SegViT's ATM head and QU neck, SAN's side adapter blocks).
"""
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_ as mmengine_trunc_normal_

TRUNC_NORMAL_SAMPLERS = {'torch': nn.init.trunc_normal_, 'mmengine': mmengine_trunc_normal_}


def trunc_normal_init_weights(module: nn.Module, std: float = 0.02,
                              sampler: str = 'torch') -> None:
    """ViT-style initialisation of ``module`` and all its sub-modules, in place.

    Args:
        module (nn.Module): every ``nn.Linear`` (subclasses included, e.g. the output
            projection of ``nn.MultiheadAttention``) and ``nn.LayerNorm`` in it is reset.
        std (float): standard deviation of the linear weights. Default: 0.02.
        sampler (str): ``'torch'`` or ``'mmengine'`` (see the module docstring).
    """
    if sampler not in TRUNC_NORMAL_SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(TRUNC_NORMAL_SAMPLERS)}, got "
                         f'{sampler!r}')
    trunc_normal_ = TRUNC_NORMAL_SAMPLERS[sampler]
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
