# Control: san_tiny_concepts.py with a randomly initialised tiny CLIP (same architecture, same
# frozen training). Its unseen-class text embeddings carry no knowledge: mIoU(U) must collapse.
_base_ = ['./san_tiny_concepts.py']
model = dict(backbone=dict(pretrained=None), text_encoder=dict(pretrained=None))
