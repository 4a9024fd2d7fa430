"""Build ReSTR's word vocabulary (one word per line) from REFER refs pickles.

    python tools/dataset_converters/build_word_vocab.py "data/refer/refcoco/refs(unc).p" \
        --out data/refer/refcoco/vocab.txt [--splits train] [--min-count 1]
    python tools/dataset_converters/build_word_vocab.py \
        "data/synthetic_referring/refsyn/refs(unc).p" \
        --out data/synthetic_referring/refsyn/vocab.txt
    python tools/dataset_converters/build_word_vocab.py data/referit/referit_query_trainval.json \
        data/referit/referit_query_test.json --out data/referit/vocab.txt

``.json`` inputs are ReferIt query files (``{"<image>_<region>": [expressions]}``, see
``mmseg_ovseg/datasets/referit.py``; every expression counts, ``--splits``/``--field`` do not
apply); anything else is a REFER refs pickle. The two kinds cannot be mixed.

Sentences (``sent`` field, or ``--field raw``) are tokenised as the language encoder does
(REFER-style split, lower case); words are written most frequent first. The pickles are read
with the restricted loader (plain data only). Exits 1 with ``error: ...`` on a bad input.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_ovseg.datasets.referit import build_vocab_from_referit  # noqa: E402
from mmseg_ovseg.models.language.word_vocab import build_vocab_from_refs  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('refs', nargs='+',
                        help='refs(*).p pickles, or ReferIt query .json files')
    parser.add_argument('--out', required=True, help='vocabulary file to write')
    parser.add_argument('--splits', nargs='*', default=None,
                        help='use only refs of these splits (default: all)')
    parser.add_argument('--min-count', type=int, default=1, help='minimum word count')
    parser.add_argument('--field', choices=('sent', 'raw'), default=None,
                        help='sentence field of the refs pickles (default: sent)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if osp.dirname(args.out):
            os.makedirs(osp.dirname(args.out), exist_ok=True)
        is_json = [r.lower().endswith('.json') for r in args.refs]
        if any(is_json) and not all(is_json):
            raise ValueError('give either refs pickles or ReferIt query .json files, not both')
        if all(is_json):
            if args.splits is not None or args.field is not None:
                raise ValueError('--splits/--field do not apply to ReferIt query files (the '
                                 'file is the split; expressions are plain strings)')
            vocab = build_vocab_from_referit(args.refs, args.out, min_count=args.min_count)
        else:
            vocab = build_vocab_from_refs(args.refs, args.out, min_count=args.min_count,
                                          splits=args.splits, field=args.field or 'sent')
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {args.out}: {len(vocab.words)} words ({len(vocab)} ids with <pad>, <unk>)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
