# Control: baseline_tiny_concepts.py with a randomly initialised tiny CLIP.
_base_ = ['./baseline_tiny_concepts.py']
model = dict(backbone=dict(pretrained=None), text_encoder=dict(pretrained=None))
