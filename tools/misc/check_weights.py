"""Which weight files the shipped configs need, which are present, and whether CLIP files load.

    python tools/misc/check_weights.py [--configs CONFIG ...] [--root .] [--no-load]

Without ``--configs``, every config in configs/. For each config, every weight file its model
names is listed with its status:

* CLIP towers (``pretrained`` of CLIPVisionTransformer, CLIPResNetWithAttention,
  OVCLIPTextEncoder, ContextCLIPTextEncoder; the configs set them all from ``clip_pretrained``);
* ``init_cfg=dict(type='Pretrained', checkpoint=...)`` anywhere in the model (SegViT's and
  ReSTR's ViT from mmseg's Segmenter release);
* ``glove_file`` (ReSTR's optional GloVe vectors).

Relative paths are resolved against ``--root`` (the folder training is started from). A present
CLIP file is loaded into the config's own tower (built from the config, then ``init_weights``,
which reads the file with ``mmseg_ovseg.clip.builder.load_tower_weights``: strict keys and
shapes, QuickGELU check for OpenAI checkpoints); ``--no-load`` only checks presence. Each
(tower, file) pair is loaded once across configs. Other checkpoints are checked for presence
only. A missing OpenAI CLIP file is reported with the command that fetches it (docs/weights.md).
Exit status 1 when anything is missing or fails to load.
"""
import argparse
import copy
import glob
import json
import os.path as osp
import sys
import warnings
from typing import Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config  # noqa: E402

from mmseg_ovseg.apis.config import clip_towers  # noqa: E402

STATUS_OK = 'ok'
STATUS_PRESENT = 'present'
STATUS_MISSING = 'MISSING'
STATUS_FAILED = 'LOAD FAILED'


def weight_refs(model_cfg) -> List[dict]:
    """``[dict(where, kind, path, tower)]``: every weight file a model config names.

    ``kind`` is 'clip' (``tower`` is the tower's config dict), 'checkpoint' (an
    ``init_cfg`` of type Pretrained) or 'glove'. Towers and fields set to ``None`` name no file.
    """
    refs = []
    for where, tower in clip_towers(model_cfg):
        if tower.get('pretrained'):
            refs.append(dict(where=f'{where}.pretrained', kind='clip',
                             path=str(tower['pretrained']), tower=tower))

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                here = f'{prefix}.{key}'
                if key == 'init_cfg':
                    inits = value if isinstance(value, (list, tuple)) else [value]
                    for i, init in enumerate(inits):
                        if isinstance(init, dict) and init.get('type') == 'Pretrained' \
                                and init.get('checkpoint'):
                            refs.append(dict(where=f'{here}.checkpoint' if len(inits) == 1
                                             else f'{here}.{i}.checkpoint',
                                             kind='checkpoint',
                                             path=str(init['checkpoint']), tower=None))
                elif key == 'glove_file' and value:
                    refs.append(dict(where=here, kind='glove', path=str(value), tower=None))
                else:
                    walk(value, here)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{prefix}.{i}')

    walk(model_cfg, 'model')
    return refs


def openai_clip_files() -> Dict[str, str]:
    """``{file name: open_clip model name}`` of the OpenAI CLIP releases open_clip knows
    (``'ViT-B-16.pt': 'ViT-B-16'``): open_clip's ``download_pretrained_from_url`` names the file
    after its URL."""
    import open_clip
    out = {}
    for name, tag in open_clip.list_pretrained():
        url = open_clip.get_pretrained_url(name, tag) if tag == 'openai' else ''
        if url and not name.endswith('-quickgelu'):
            out.setdefault(osp.basename(url), name)
    return out


def fetch_command(model: str, folder: str) -> str:
    """The command that downloads OpenAI's CLIP ``model`` into ``folder`` (SHA256-checked)."""
    return ('python -c "import open_clip; open_clip.download_pretrained_from_url('
            f"open_clip.get_pretrained_url('{model}', 'openai'), cache_dir='{folder}')\"")


def check_clip_load(tower_cfg: dict, path: str) -> Optional[str]:
    """Build the tower of ``tower_cfg`` with ``pretrained=path`` and run its ``init_weights``
    (the strict CLIP load). Returns ``None`` when it loads, else the error message."""
    import logging

    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_ovseg  # noqa: F401  (registers the towers)
    init_default_scope('mmseg')
    cfg = copy.deepcopy(dict(tower_cfg))
    cfg['pretrained'] = path
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    try:
        tower = MODELS.build(cfg)
        tower.init_weights()
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        return f'{type(e).__name__}: {e}'
    finally:
        logger.setLevel(level)
    return None


def check_config(config: str, root: str = '.', load: bool = True,
                 cache: Optional[dict] = None) -> List[dict]:
    """Status of every weight file of one config: ``weight_refs`` entries with ``file`` (the
    resolved path), ``status`` (ok / present / MISSING / LOAD FAILED) and ``detail``."""
    cfg = Config.fromfile(config)
    cache = {} if cache is None else cache
    results = []
    for ref in weight_refs(cfg.get('model', {})):
        path = ref['path']
        file = path if osp.isabs(path) else osp.normpath(osp.join(root, path))
        res = dict(where=ref['where'], kind=ref['kind'], path=path, file=file, detail='')
        if not osp.isfile(file):
            res['status'] = STATUS_MISSING
        elif ref['kind'] != 'clip' or not load:
            res['status'] = STATUS_PRESENT
        else:
            tower = ref['tower'].to_dict() if hasattr(ref['tower'], 'to_dict') \
                else dict(ref['tower'])
            key = (json.dumps(tower, sort_keys=True, default=str), osp.abspath(file))
            if key not in cache:
                cache[key] = check_clip_load(tower, file)
            error = cache[key]
            res['status'] = STATUS_OK if error is None else STATUS_FAILED
            res['detail'] = 'loads strictly' if error is None else error
        if ref['kind'] == 'clip':
            model = ref['tower'].get('clip_model')
            res['clip_model'] = model if isinstance(model, str) else 'dict'
        results.append(res)
    return results


def default_configs(root: str) -> List[str]:
    return sorted(glob.glob(osp.join(root, 'configs', '*.py')))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--configs', nargs='+', help='config files (default: configs/*.py '
                        'of the repository)')
    parser.add_argument('--root', default='.', help='folder relative weight paths are '
                        'resolved against (default: .)')
    parser.add_argument('--no-load', action='store_true', help='check presence only; do not '
                        'load CLIP files into the towers')
    args = parser.parse_args(argv)
    configs = args.configs or default_configs(REPO_ROOT)
    if not configs:
        print('no configs given or found', file=sys.stderr)
        return 2
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    fetch = None
    cache: dict = {}
    bad = 0
    for config in configs:
        if not osp.isfile(config):
            print(f'{config}: MISSING config file')
            bad += 1
            continue
        results = check_config(config, args.root, load=not args.no_load, cache=cache)
        if not results:
            print(f'{config}: no weight files (random initialisation)')
            continue
        print(f'{config}:')
        hinted = set()
        for res in results:
            what = res['kind'] + (f" {res['clip_model']}" if 'clip_model' in res else '')
            line = f"  {res['status']:<11} {res['where']} = {res['path']}  [{what}]"
            if res['status'] == STATUS_MISSING:
                bad += 1
                line += f"  (expected at {res['file']})"
                if res['file'] in hinted:
                    print(line)
                    continue
                hinted.add(res['file'])
                if res['kind'] == 'clip':
                    fetch = openai_clip_files() if fetch is None else fetch
                    model = fetch.get(osp.basename(res['path']))
                    line += ('\n      fetch: ' + fetch_command(model, osp.dirname(res['file']))
                             if model else '\n      see docs/weights.md')
                else:
                    line += '\n      see docs/weights.md'
            elif res['status'] == STATUS_FAILED:
                bad += 1
                line += '\n      ' + res['detail'].replace('\n', '\n      ')
            elif res['detail']:
                line += f"  {res['detail']}"
            print(line)
    print('all weight files present' + ('' if args.no_load else ' and loading') if not bad
          else f'{bad} problem(s); docs/weights.md says where each file comes from')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
