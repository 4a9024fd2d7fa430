# ReSTR on ReferIt (ReferItGame; SAIAPR TC-12 images): the RefCOCO recipe
# (restr_vit-b16_refcoco-480x480.py: model, 480x480 letterbox, optimiser, 400k iterations at
# batch 8) with ReferIt's data, read as the official code does (SouthFlame/restr 371f102,
# build_batches.py build_referit_batches, utils/io.py load_referit_gt_mask):
#   data/referit/referit_query_{trainval,test}.json  {"<image>_<region>": [expressions]}
#   data/referit/images/<image>.jpg, data/referit/mask/<image>_<region>.mat (segimg_t == 0)
# Splits (official README): train on 'trainval', validate and test on 'test' (the official
# training validates on the first 10,000 test samples in glob order; here on all of them).
# T = 20 words (build_batches.py). Vocabulary: official data/vocabulary_referit.txt (8,803
# rows incl. <pad> <go> <eos> <unk>; referit_emb.npy); here one built from the query files:
#   python tools/dataset_converters/build_word_vocab.py data/referit/referit_query_trainval.json \
#     data/referit/referit_query_test.json --out data/referit/vocab.txt
_base_ = ['./restr_vit-b16_refcoco-480x480.py']

dataset_type = 'ReferItDataset'
data_root = 'data/referit'
data_prefix = dict(img_path='images', mask_path='mask')
crop_size = (480, 480)
vocab_file = 'data/referit/vocab.txt'
max_len = 20
splits = dict(train='trainval', val='test', test=('test', ))

model = dict(language_encoder=dict(vocab_file=vocab_file, max_len=max_len))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadReferItMask'),
    # letterbox: longer side to 480, keep the aspect ratio, pad to 480x480 (as RefCOCO's)
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='PackReferringInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    # loaded after Resize: the metric compares at the original image size
    dict(type='LoadReferItMask'),
    dict(type='PackReferringInputs')
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='referit_query_trainval.json',
        data_prefix=data_prefix,
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='referit_query_test.json',
        data_prefix=data_prefix,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
