# Control: zegclip_tiny_concepts-zs.py with a randomly initialised tiny CLIP (same architecture,
# same training). Its unseen-class text embeddings carry no knowledge, so mIoU(U) must
# collapse; the seen classes are learned by the prompts and the decoder alone.
_base_ = ['./zegclip_tiny_concepts-zs.py']
model = dict(backbone=dict(pretrained=None), text_encoder=dict(pretrained=None))
