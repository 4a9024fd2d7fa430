"""Write the synthetic shapes segmentation dataset (mmseg layout) used by the demo and tests.

    python tools/dataset_converters/make_synthetic_data.py --data-root data/synthetic \
        --num-train 400 --num-val 100 --seed 0 --size 128

Deterministic from ``--seed``; does nothing if the same dataset is already there.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-root', default='data/synthetic', help='output directory')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=100, help='validation images')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    info = generate_synthetic_dataset(args.data_root, num_train=args.num_train,
                                      num_val=args.num_val, seed=args.seed, size=args.size)
    params = info['params']
    if not info['generated']:
        print(f'{info["data_root"]}: already complete ({params}), nothing written')
        return info
    print(f'wrote {info["data_root"]}: {params["num_train"]} train + {params["num_val"]} val '
          f'images of {params["size"]}x{params["size"]} (seed {params["seed"]})')
    print('  img_dir/{train,val}/*.png (RGB), ann_dir/{train,val}/*.png (class indices)')
    total = sum(info['class_pixels'].values())
    for name, count in info['class_pixels'].items():
        print(f'  {name:>15s}: {100 * count / total:5.2f}% of pixels')
    return info


if __name__ == '__main__':
    main()
