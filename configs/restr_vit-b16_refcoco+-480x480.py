# ReSTR on RefCOCO+ (UNC splits): the RefCOCO recipe (restr_vit-b16_refcoco-480x480.py) with
# RefCOCO+'s files. Paper oIoU: val 55.78, testA 60.44, testB 48.27.
# Official (SouthFlame/restr 371f102): build_batches.py '-d unc+' reads
# REFER('refcoco+', splitBy='unc'), splits train / val / testA / testB, T = 20 words
# (T = 20 for every dataset there); its vocabulary is data/vocabulary_Gref.txt, shared by all
# COCO-based datasets (12,112 rows incl. <pad> <go> <eos> <unk>; embedding Gref_emb.npy).
# Here: a vocabulary built from RefCOCO+'s own refs (docs/restr.md, "Vocabularies"):
#   python tools/dataset_converters/build_word_vocab.py 'data/refer/refcoco+/refs(unc).p' \
#     --out data/refer/refcoco+/vocab.txt
# Evaluate testA / testB with --cfg-options test_dataloader.dataset.split=testA (or testB).
_base_ = ['./restr_vit-b16_refcoco-480x480.py']

ann_file = 'refcoco+/refs(unc).p'
instances_file = 'refcoco+/instances.json'
vocab_file = 'data/refer/refcoco+/vocab.txt'
max_len = 20
splits = dict(train='train', val='val', test=('val', 'testA', 'testB'))

model = dict(language_encoder=dict(vocab_file=vocab_file, max_len=max_len))
train_dataloader = dict(dataset=dict(ann_file=ann_file, instances_file=instances_file,
                                     split='train'))
val_dataloader = dict(dataset=dict(ann_file=ann_file, instances_file=instances_file,
                                   split='val'))
test_dataloader = val_dataloader
