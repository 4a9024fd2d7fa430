"""The in-package tiny CLIP: its open_clip model config and its cached pretrained weights.

``mmseg_ovseg/clip/model_configs/*.json`` are registered with open_clip when this package is
imported, so ``clip_model='ovseg-tiny-clip'`` works wherever an open_clip name does
(``CLIPVisionTransformer``, ``OVCLIPTextEncoder``, ``open_clip.create_model``,
``open_clip.get_tokenizer``). ``ovseg-tiny-clip`` is a 64x64 ViT (patch 8, 4 layers, width
128) and a 4-layer text transformer (width 128, 32 tokens, open_clip's BPE vocabulary) with
``nn.GELU`` (not QuickGELU: its weights are ours, not OpenAI's).

:func:`ensure_tiny_clip` returns the pretrained checkpoint, pretraining it with
``tools/pretrain_clip.py``'s defaults when the file is missing (docs/tiny_clip.md).
"""
import os
import os.path as osp

import open_clip

TINY_CLIP_NAME = 'ovseg-tiny-clip'
MODEL_CONFIG_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'model_configs')
DEFAULT_CHECKPOINT = osp.join('work_dirs', 'tiny_clip', f'{TINY_CLIP_NAME}.pt')

_registered = False


def register_model_configs() -> None:
    """Register this package's open_clip model configs (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def ensure_tiny_clip(path: str = DEFAULT_CHECKPOINT, **pretrain_kwargs) -> str:
    """Path of the pretrained tiny CLIP checkpoint; pretrain it first if it does not exist.

    ``pretrain_kwargs`` override ``tools/pretrain_clip.py``'s defaults (``steps``,
    ``batch_size``, ``lr``, ``seed``, ...) when pretraining is needed. An existing file is
    returned as is (delete it to pretrain again).
    """
    if osp.isfile(path):
        return path
    from mmseg_ovseg.clip.pretrain import pretrain
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    pretrain(out=path, **pretrain_kwargs)
    if not osp.isfile(path):
        raise RuntimeError(f'pretraining finished without writing {path}')
    return path
