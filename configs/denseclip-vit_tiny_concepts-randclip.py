# Control: denseclip-vit_tiny_concepts.py with randomly initialised tiny CLIP towers (same
# recipe otherwise, image tower at lr x0.1 and text tower frozen as with the pretrained one).
_base_ = ['./denseclip-vit_tiny_concepts.py']
model = dict(backbone=dict(pretrained=None), text_encoder=dict(pretrained=None))
