# ReSTR on RefCOCOg (G-Ref) with the UMD split (Nagaraja et al.): the RefCOCO recipe
# (restr_vit-b16_refcoco-480x480.py) with refcocog/refs(umd).p, splits train / val / test.
# Not in the official code (SouthFlame/restr 371f102): its build_batches.py builds G-Ref only
# with splitBy='google' (restr_vit-b16_refcocog-google-480x480.py); the recipe here is the
# official one otherwise, T = 20 words (build_batches.py's T for every dataset). Vocabulary:
# the official code shares data/vocabulary_Gref.txt over all COCO datasets; here one is
# built from the UMD refs (docs/restr.md, "Vocabularies"):
#   python tools/dataset_converters/build_word_vocab.py 'data/refer/refcocog/refs(umd).p' \
#     --out data/refer/refcocog/vocab_umd.txt
# Evaluate the test split with --cfg-options test_dataloader.dataset.split=test.
_base_ = ['./restr_vit-b16_refcoco-480x480.py']

ann_file = 'refcocog/refs(umd).p'
instances_file = 'refcocog/instances.json'
vocab_file = 'data/refer/refcocog/vocab_umd.txt'
max_len = 20
splits = dict(train='train', val='val', test=('val', 'test'))

model = dict(language_encoder=dict(vocab_file=vocab_file, max_len=max_len))
train_dataloader = dict(dataset=dict(ann_file=ann_file, instances_file=instances_file,
                                     split='train'))
val_dataloader = dict(dataset=dict(ann_file=ann_file, instances_file=instances_file,
                                   split='val'))
test_dataloader = val_dataloader
