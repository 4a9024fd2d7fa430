"""Which datasets of the shipped configs are ready under data/, and what is missing.

    python tools/misc/check_datasets.py [CONFIG ...] [--data-root data] [--split test]

Without CONFIG, every config in configs/ except the synthetic ones. Each distinct dataset
(train/val/test dataloaders) is checked once: its data_root, image and label folders, split file
(every listed image and label map must exist), REFER annotation files; one line per dataset,
``ok`` or ``MISSING`` with the paths expected. docs/datasets.md says how to prepare each.
Exit status 1 when anything is missing.
"""
import argparse
import glob
import os.path as osp
import sys
from collections import OrderedDict

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config  # noqa: E402

from mmseg_ovseg.datasets.layout_check import check_dataset_layout, format_problems, unique_datasets  # noqa: E402

LOADERS = dict(train='train_dataloader', val='val_dataloader', test='test_dataloader')


def _relocate(ds, data_root):
    """Copy of a dataset config with a leading ``data/`` of data_root replaced."""
    ds = dict(ds)
    if ds.get('type') == 'ConcatDataset':
        ds['datasets'] = [_relocate(d, data_root) for d in ds['datasets']]
        return ds
    if 'dataset' in ds and isinstance(ds['dataset'], dict):
        ds['dataset'] = _relocate(ds['dataset'], data_root)
        return ds
    root = str(ds.get('data_root') or '')
    if root == 'data' or root.startswith('data/'):
        ds['data_root'] = osp.join(data_root, root[len('data/'):]) if root != 'data' \
            else data_root
    return ds


def _describe(ds):
    if ds.get('type') == 'ConcatDataset':
        return ' + '.join(_describe(d) for d in ds['datasets'])
    if 'dataset' in ds and isinstance(ds['dataset'], dict):
        return _describe(ds['dataset'])
    parts = [str(ds.get('type')), str(ds.get('data_root'))]
    prefix = ds.get('data_prefix') or {}
    if prefix.get('seg_map_path'):
        parts.append(prefix['seg_map_path'])
    for key in ('ann_file', 'split'):
        if ds.get(key):
            parts.append(str(ds[key]))
    return ' '.join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Check the datasets the configs read')
    parser.add_argument('configs', nargs='*', help='configs (default: configs/*.py but the '
                        'synthetic ones)')
    parser.add_argument('--data-root', default='data', help="replaces the configs' leading "
                        "'data/' (default: data)")
    parser.add_argument('--split', nargs='+', choices=list(LOADERS),
                        default=list(LOADERS), help='dataloaders to check (default: all)')
    args = parser.parse_args(argv)
    configs = args.configs or sorted(
        p for p in glob.glob(osp.join(REPO_ROOT, 'configs', '*.py')) if 'synthetic' not in p)
    found = OrderedDict()  # description -> (dataset cfg, [config names])
    unreadable = 0
    for path in configs:
        try:
            cfg = Config.fromfile(path)
        except Exception as e:  # noqa: BLE001  (a broken config must not hide the others)
            unreadable += 1
            print(f'{path}: cannot be read ({type(e).__name__}: {str(e)[:200]})')
            continue
        loaders = {k: v for k, v in LOADERS.items() if k in args.split}
        sub = {v: cfg.get(v) for v in loaders.values() if cfg.get(v)}
        for key, ds in unique_datasets(sub):
            ds = _relocate(ds.to_dict() if hasattr(ds, 'to_dict') else ds, args.data_root)
            desc = _describe(ds)
            entry = found.setdefault(desc, (ds, []))
            entry[1].append(f'{osp.splitext(osp.basename(path))[0]}:{key.split("_")[0]}')
    missing = 0
    for desc, (ds, users) in found.items():
        problems = check_dataset_layout(ds)
        missing += bool(problems)
        print(format_problems(desc, problems))
        print('    used by ' + ', '.join(users))
    print(f'{len(found) - missing} of {len(found)} datasets ready'
          + (' (docs/datasets.md says how to prepare the others)' if missing else ''))
    return 1 if missing or unreadable else 0


if __name__ == '__main__':
    sys.exit(main())
