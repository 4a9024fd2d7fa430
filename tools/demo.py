"""End-to-end CPU demo (``make demo``): open-vocabulary segmentation of classes never labelled
in segmentation training, with the in-package tiny CLIP.

1. writes the generated concept benchmark to ``data/concepts`` if it is not there yet (55
   classes; split 'concepts': 9 unseen classes, docs/open_vocab.md);
2. pretrains the tiny CLIP (preset 'demo' of ``tools/pretrain_clip.py``) into the checkpoint
   the config loads, ``work_dirs/tiny_clip/ovseg-tiny-clip.pt``, unless that file exists
   (``ensure_tiny_clip``; reused afterwards);
3. trains ``DEMO_CONFIG`` (SAN with the frozen tiny CLIP) on the 46 *seen* classes only, with
   mmengine's Runner in ``work_dirs/demo``;
4. evaluates on all 55 classes and prints mIoU(S), mIoU(U) and hIoU;
5. segments a drawn scene of mostly unseen objects with a vocabulary given at run time (unseen
   names, look-alike seen names, another order) and writes the picture -- the scene and the
   labelled overlay with a legend -- to ``work_dirs/demo/open_vocab_demo.png``, printing how
   much of each object got its name.

    .venv/bin/python tools/demo.py [--config CONFIG] [--max-iters N] [--work-dir DIR]

``--config configs/san_tiny_synthetic.py`` (or another ``*_tiny_synthetic`` config) runs the
earlier closed-set demo on the 8-class synthetic shapes instead (random-init CLIP).
"""
import argparse
import os.path as osp
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmseg_ovseg  # noqa: E402,F401  (fills registries, safe checkpoint loading)
from mmseg_ovseg.datasets.concept_seg import generate_concept_dataset  # noqa: E402
from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset  # noqa: E402
from mmseg_ovseg.utils.schedule import set_max_iters  # noqa: E402

# The demo model: SAN with the frozen pretrained tiny CLIP, trained on the seen classes.
DEMO_CONFIG = 'configs/san_tiny_concepts.py'
WORK_DIR = 'work_dirs/demo'
TINY_CLIP = 'work_dirs/tiny_clip/ovseg-tiny-clip.pt'
# Datasets by config dataset type: (default root, generator, its arguments).
DATASETS = {
    'ConceptSegDataset': ('data/concepts', generate_concept_dataset,
                          dict(num_train=1000, num_val=250, seed=0, size=128)),
    'SyntheticShapesDataset': ('data/synthetic', generate_synthetic_dataset,
                               dict(num_train=400, num_val=100, seed=0, size=128)),
}

# Open-vocabulary picture on the concept benchmark: a drawn scene of three unseen objects and
# a seen one, segmented with names chosen at run time -- the unseen names, seen look-alikes
# sharing their colour or shape, and another order than training. (Measured: the default
# 800-iteration SAN names all three unseen objects on seeds 0 and 1; docs/tiny_clip.md.)
DEMO_SCENE = (  # (class name, box x0, y0, x1, y1) on a 256 x 256 canvas
    ('purple star', 16, 14, 116, 114),
    ('blue circle', 146, 22, 236, 112),
    ('flower', 20, 144, 114, 238),
    ('green cross', 144, 146, 238, 240),
)
DEMO_VOCABULARY = ['purple star', 'red star', 'purple circle', 'blue circle', 'blue star',
                   'flower', 'tree', 'green cross', 'green square', 'background']
# The closed-set synthetic demo: its classes in another order.
SYNTHETIC_VOCABULARY = ['orange ring', 'background', 'blue triangle', 'red circle',
                        'cyan checker', 'yellow stripes', 'purple dots', 'green square']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='mmseg-ovseg CPU open-vocabulary demo')
    parser.add_argument('--config', default=DEMO_CONFIG, help='demo config')
    parser.add_argument('--work-dir', default=WORK_DIR, help='logs, checkpoint, pictures')
    parser.add_argument('--data-root', default=None,
                        help='dataset location (default: the config dataset\'s)')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='override the number of training iterations')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings (mmseg convention), e.g. another '
                        'tiny-CLIP checkpoint: model.backbone.pretrained=X '
                        'model.text_encoder.pretrained=X model.decode_head.logit_scale=LN')
    return parser.parse_args(argv)


def dataset_spec(cfg: Config):
    kind = cfg.train_dataloader.dataset.type
    if kind not in DATASETS:
        raise ValueError(f'tools/demo.py generates {sorted(DATASETS)}; config dataset is '
                         f'{kind!r}')
    return DATASETS[kind]


def build_cfg(args) -> Config:
    cfg = Config.fromfile(osp.join(REPO_ROOT, args.config)
                          if not osp.isabs(args.config) else args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root or dataset_spec(cfg)[0])
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    if args.max_iters is not None:
        set_max_iters(cfg, args.max_iters)
    # Evaluate once, after training (step 4), not inside the loop.
    cfg.train_cfg.val_interval = cfg.train_cfg.max_iters + 1
    return cfg


def method_name(cfg: Config) -> str:
    """A readable name of the method a config trains."""
    model = cfg.model
    if model.type == 'SAN':
        return 'SAN (side adapter network, tiny widths)'
    head = model.get('decode_head', {}).get('type', '?')
    if model.type == 'TextEncoderDecoder' and head == 'PatchTextHead':
        return 'one-stage CLIP baseline (TextEncoderDecoder + PatchTextHead)'
    return f'{model.type} + {head}'


def tiny_clip_checkpoint(cfg: Config):
    """The in-package tiny CLIP checkpoint the config's CLIP towers load (``pretrained`` of
    the backbone or text encoder whose ``clip_model`` is ``'ovseg-tiny-clip'``); None when it
    loads another CLIP or none (random init)."""
    from mmseg_ovseg.clip.tiny import TINY_CLIP_NAME
    for tower in ('backbone', 'text_encoder'):
        spec = cfg.model.get(tower, {})
        if spec.get('clip_model') == TINY_CLIP_NAME and spec.get('pretrained'):
            return spec['pretrained']
    return None


def pick_demo_image(data_root: str, num_val: int) -> str:
    """The first val image that shows at least three object classes (synthetic demo)."""
    import numpy as np
    from PIL import Image
    for i in range(num_val):
        name = f'{i:06d}.png'
        label = np.asarray(Image.open(osp.join(data_root, 'ann_dir', 'val', name)))
        if len(np.unique(label)) >= 4:
            return osp.join(data_root, 'img_dir', 'val', name)
    return osp.join(data_root, 'img_dir', 'val', '000000.png')


def draw_demo_scene(path: str):
    """Render :data:`DEMO_SCENE` to ``path``; returns its ``(H, W)`` concept label map."""
    import numpy as np
    from PIL import Image

    from mmseg_ovseg.datasets.concepts import class_index, render_scene
    rng = np.random.default_rng(2024)
    image, label = render_scene(rng, 256, [class_index(n) for n, *_ in DEMO_SCENE],
                                boxes=[box for _, *box in DEMO_SCENE])
    Image.fromarray(image).save(path)
    return label


def object_report(pred, concept_label, vocabulary):
    """Per drawn object: share of its pixels given its own name, and the most given name."""
    import numpy as np

    from mmseg_ovseg.datasets.concepts import class_index
    lines = []
    for name, *_ in DEMO_SCENE:
        mask = concept_label == class_index(name)
        votes = np.bincount(pred[mask], minlength=len(vocabulary))
        own = votes[vocabulary.index(name)] / max(mask.sum(), 1)
        lines.append((name, float(own), vocabulary[int(votes.argmax())]))
    return lines


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    cfg = build_cfg(args)
    _, generate, gen_kwargs = dataset_spec(cfg)
    data_root = cfg.train_dataloader.dataset.data_root
    info = generate(data_root, **gen_kwargs)
    print(f'[demo] data: {info["data_root"]} '
          f'({"generated" if info["generated"] else "already present"}, '
          f'{gen_kwargs["num_train"]} train / {gen_kwargs["num_val"]} val)', flush=True)
    zero_shot = cfg.train_dataloader.dataset.type == 'ConceptSegDataset'
    tiny_clip = tiny_clip_checkpoint(cfg)
    if tiny_clip:
        _ensure_tiny_clip(tiny_clip)

    runner = Runner.from_cfg(cfg)
    t0 = time.time()
    runner.train()
    train_time = time.time() - t0
    metrics = runner.val()
    ckpt = osp.join(cfg.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')

    from mmseg_ovseg.apis import OpenVocabInferencer
    if zero_shot:
        image = osp.join(cfg.work_dir, 'open_vocab_scene.png')
        concept_label = draw_demo_scene(image)
        vocabulary = DEMO_VOCABULARY
    else:
        image = pick_demo_image(data_root, gen_kwargs['num_val'])
        vocabulary = SYNTHETIC_VOCABULARY
    inferencer = OpenVocabInferencer(cfg, checkpoint=ckpt, classes=vocabulary)
    result = inferencer(image)[0]
    out_file = osp.join(cfg.work_dir, 'open_vocab_demo.png')
    _save_side_by_side(image, inferencer.visualize(image, result, out_file=None), out_file)
    pred = result.pred_sem_seg.data[0].cpu().numpy()
    found = [vocabulary[i] for i in sorted(set(pred.ravel().tolist()))]

    print('\n' + '=' * 72)
    print(f'Method: {method_name(cfg)}')
    print(f'Config: {args.config} ({cfg.train_cfg.max_iters} iterations, '
          f'train {train_time:.0f}s)')
    if zero_shot:
        _print_zero_shot(metrics, out_file, inferencer.model.vocabulary, pred, concept_label,
                         vocabulary)
    else:
        print(f'Synthetic val mIoU: {metrics["mIoU"]:.2f}   (aAcc {metrics["aAcc"]:.2f}, '
              f'mAcc {metrics["mAcc"]:.2f})   [{method_name(cfg)}]')
        print(f'Open-vocabulary inference on {image}')
        print(f'  vocabulary: {vocabulary}')
        print(f'  found: {found}')
        print(f'  picture: {out_file}')
    print(f'Checkpoint: {ckpt}')
    print(f'Total demo time: {time.time() - start:.0f}s')
    print('=' * 72)
    return metrics


def _ensure_tiny_clip(path: str) -> None:
    """Pretrain the tiny CLIP the config loads (preset 'demo', minutes on a CPU) unless that
    file exists; a checkpoint given with --cfg-options that does not exist yet is pretrained
    there the same way."""
    from mmseg_ovseg.clip.tiny import ensure_tiny_clip
    cached = osp.isfile(path)
    t0, c0 = time.time(), time.process_time()
    ensure_tiny_clip(path)
    how = ('cached' if cached else f'pretrained in {time.time() - t0:.0f}s wall, '
           f'{time.process_time() - c0:.0f}s process CPU')
    print(f'[demo] tiny CLIP: {path} ({how})', flush=True)


def _save_side_by_side(image: str, drawn, out_file: str) -> None:
    """The input image and the drawn prediction (RGB) side by side, 8 white pixels apart."""
    import mmcv
    import numpy as np
    scene = mmcv.bgr2rgb(mmcv.imread(image))
    pad = np.full((max(scene.shape[0], drawn.shape[0]) - scene.shape[0], scene.shape[1], 3),
                  255, np.uint8)
    gap = np.full((drawn.shape[0], 8, 3), 255, np.uint8)
    picture = np.concatenate([np.concatenate([scene, pad])[:drawn.shape[0]], gap, drawn], 1)
    mmcv.imwrite(mmcv.rgb2bgr(picture), out_file)


def _print_zero_shot(metrics: dict, out_file: str, names, pred, concept_label,
                     vocabulary) -> None:
    """The zero-shot demo's figures: mIoU of the seen and unseen classes, and per drawn
    object the share of its pixels given its own name."""
    from mmseg_ovseg.clip.vocabularies import get_zero_shot_split
    seen, unseen = get_zero_shot_split('concepts')
    print(f'Trained on the {len(seen)} seen classes only; unseen (never labelled): '
          f'{[get_vocabulary_name(i) for i in unseen]}')
    print(f'Concept benchmark val (all 55 classes): mIoU(S) {metrics["mIoU_seen"]:.2f}  '
          f'mIoU(U) {metrics["mIoU_unseen"]:.2f}  hIoU {metrics["hIoU"]:.2f}  '
          f'(pAcc {metrics["pAcc"]:.2f})')
    print(f'Open-vocabulary picture: {out_file}')
    print(f'  vocabulary (run time): {names}')
    unseen_names = {get_vocabulary_name(i) for i in unseen}
    for name, own, top in object_report(pred, concept_label, vocabulary):
        tag = 'unseen' if name in unseen_names else 'seen'
        print(f'  {name:>12s} ({tag:6s}): {100 * own:5.1f}% of its pixels named '
              f'{name!r} (most given name: {top!r})')


def get_vocabulary_name(index: int) -> str:
    from mmseg_ovseg.datasets.concept_seg import CONCEPT_SEG_CLASSES
    return CONCEPT_SEG_CLASSES[index]


if __name__ == '__main__':
    main()
