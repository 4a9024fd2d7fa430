# Control: denseclip-vit_tiny_concepts-fpn.py (plain FPN) with a randomly initialised tiny CLIP
# image tower (same recipe otherwise, image tower at lr x0.1).
_base_ = ['./denseclip-vit_tiny_concepts-fpn.py']
model = dict(backbone=dict(pretrained=None))
