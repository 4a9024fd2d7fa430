# ReSTR on RefCOCOg (G-Ref) with the Google split (Mao et al.; train / val, no test split):
# the RefCOCO recipe (restr_vit-b16_refcoco-480x480.py) with refcocog/refs(google).p.
# Official (SouthFlame/restr 371f102): build_batches.py '-d Gref' reads
# REFER('refcocog', splitBy='google'), sets train and val, T = 20 words; its vocabulary
# data/vocabulary_Gref.txt (12,112 rows incl. <pad> <go> <eos> <unk>; Gref_emb.npy) is
# shared by all COCO datasets. Here one is built from the Google refs (docs/restr.md):
#   python tools/dataset_converters/build_word_vocab.py 'data/refer/refcocog/refs(google).p' \
#     --out data/refer/refcocog/vocab_google.txt
_base_ = ['./restr_vit-b16_refcoco-480x480.py']

ann_file = 'refcocog/refs(google).p'
instances_file = 'refcocog/instances.json'
vocab_file = 'data/refer/refcocog/vocab_google.txt'
max_len = 20
splits = dict(train='train', val='val', test=('val', ))

model = dict(language_encoder=dict(vocab_file=vocab_file, max_len=max_len))
train_dataloader = dict(dataset=dict(ann_file=ann_file, instances_file=instances_file,
                                     split='train'))
val_dataloader = dict(dataset=dict(ann_file=ann_file, instances_file=instances_file,
                                   split='val'))
test_dataloader = val_dataloader
