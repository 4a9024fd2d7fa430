# SegViT-Shrunk ViT-L/16 on ADE20K-150 (official configs/segvit/shrink/
# segvit_vit-l_jax_shrink8_tpnatm.py). README: 53.9 mIoU single-scale, 55.1 multi-scale,
# 373.5 GFLOPs (vs 637.9 for SegViT ViT-L).
# - QD: layer 9 (shrink_idx=8) of the ViT queries with the [::2, ::2] token grid: layers 9-24
#   run at 1/32; levels out_indices (7, 23) = layer 8 (1/16) and layer 24 (1/32);
# - QU neck: 40x40 learnable queries (640 / 16), 3 decoder layers on layer 8 then on layer 24;
# - single-level ATM head on the QU map (no projection), every decoder layer supervised, masks
#   not summed.
# Same optimiser and schedule as the plain model (the QU neck gets the head's lr x10).
_base_ = ['./segvit_vit-l16_ade20k-640x640.py']

model = dict(
    backbone=dict(type='ShrunkVisionTransformer', shrink_idx=8, out_indices=(7, 23)),
    neck=dict(type='QueryUpsampling', in_channels=1024, embed_dims=512, query_grid=(40, 40),
              num_layers=3, num_heads=16, num_levels=2),
    decode_head=dict(in_channels=512, use_stages=1, use_proj=False, per_layer_outputs=True,
                     sum_masks=False))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'neck': dict(lr_mult=10.0)}))
