# SegViT-Shrunk at tiny widths on the synthetic shapes data (CPU demo of the Shrunk structure):
# mmseg's ViT with query-based down-sampling (QD) at layer 3 of 4 (16x16 -> 8x8 tokens), the
# QueryUpsampling neck (16x16 learnable queries decode layer 2 (1/8) then layer 4 (1/16)) and a
# single-level ATM head supervised on every decoder layer. Same data, schedule and optimiser as
# segvit_tiny_synthetic.py (the neck gets the head's learning rate, as the ADE Shrunk config).
# Measured: 1000 iterations (0.37 s/iter) reach only val mIoU 10.17 (all background; the same
# with the patch bias): from a random ViT the position-free QU queries do not learn to localise
# in this budget -- a pipeline check, not a working demo (see docs/segvit.md, "Tiny Shrunk
# run").
_base_ = ['./segvit_tiny_synthetic.py']

model = dict(
    backbone=dict(type='ShrunkVisionTransformer', shrink_idx=2, out_indices=(1, 3)),
    neck=dict(type='QueryUpsampling', in_channels=64, embed_dims=32, query_grid=(16, 16),
              num_layers=3, num_heads=2, num_levels=2),
    decode_head=dict(in_channels=32, use_stages=1, use_proj=False, per_layer_outputs=True,
                     sum_masks=False))
