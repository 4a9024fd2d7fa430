"""Build ReSTR's word vocabulary (one word per line) from REFER refs pickles.

    python tools/build_word_vocab.py "data/refer/refcoco/refs(unc).p" \
        --out data/refer/refcoco/vocab.txt [--splits train] [--min-count 1]
    python tools/build_word_vocab.py "data/synthetic_referring/refsyn/refs(unc).p" \
        --out data/synthetic_referring/refsyn/vocab.txt

Sentences (``sent`` field, or ``--field raw``) are tokenised as the language encoder does
(REFER-style split, lower case); words are written most frequent first. The pickles are read
with the restricted loader (plain data only). Exits 1 with ``error: ...`` on a bad input.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmseg_ovseg.models.language.word_vocab import build_vocab_from_refs  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('refs', nargs='+', help='refs(*).p pickles')
    parser.add_argument('--out', required=True, help='vocabulary file to write')
    parser.add_argument('--splits', nargs='*', default=None,
                        help='use only refs of these splits (default: all)')
    parser.add_argument('--min-count', type=int, default=1, help='minimum word count')
    parser.add_argument('--field', choices=('sent', 'raw'), default='sent',
                        help='sentence field to read')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if osp.dirname(args.out):
            os.makedirs(osp.dirname(args.out), exist_ok=True)
        vocab = build_vocab_from_refs(args.refs, args.out, min_count=args.min_count,
                                      splits=args.splits, field=args.field)
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {args.out}: {len(vocab.words)} words ({len(vocab)} ids with <pad>, <unk>)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
