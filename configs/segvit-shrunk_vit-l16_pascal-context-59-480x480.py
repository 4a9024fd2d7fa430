# SegViT-Shrunk ViT-L/16 on PASCAL Context-59 (official configs/segvit/shrink/
# segvit_vit-l_jax_shrink8_tpnatm_pc.py: the plain PC config with the Shrunk structure, 4
# images per GPU). README: 62.3 mIoU single-scale, 63.7 multi-scale, 186.9 GFLOPs. 59 classes
# with reduce_zero_label (the official config's 60 classes: see the plain PC-59 config).
# - QD at layer 9 (shrink_idx=8), levels (7, 23); QU neck with 30x30 learnable queries
#   (480 / 16), 3 decoder layers per level; single-level ATM head, every layer supervised;
# - data, optimizer (wd 0.03, poly power 1.0), 80k iterations, batch 16: as the plain config.
_base_ = ['./segvit_vit-l16_pascal-context-59-480x480.py']

model = dict(
    backbone=dict(type='ShrunkVisionTransformer', shrink_idx=8, out_indices=(7, 23)),
    neck=dict(type='QueryUpsampling', in_channels=1024, embed_dims=512, query_grid=(30, 30),
              num_layers=3, num_heads=16, num_levels=2),
    decode_head=dict(in_channels=512, use_stages=1, use_proj=False, per_layer_outputs=True,
                     sum_masks=False))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'neck': dict(lr_mult=10.0)}))
