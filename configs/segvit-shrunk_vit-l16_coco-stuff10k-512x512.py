# SegViT-Shrunk ViT-L/16 on COCO-Stuff-10k (official configs/segvit/shrink/
# segvit_vit-l_jax_shrink8_tpnatm_coco.py: the plain COCO-Stuff-10k config with the Shrunk
# structure). README: 49.1 mIoU single-scale, 49.4 multi-scale, 224.8 GFLOPs.
# - QD at layer 9 (shrink_idx=8), levels (7, 23); QU neck with 32x32 learnable queries
#   (512 / 16), 3 decoder layers per level; single-level ATM head, every layer supervised;
# - data, optimizer (wd 0.02, poly power 2.0), 80k iterations, batch 8: as the plain config.
_base_ = ['./segvit_vit-l16_coco-stuff10k-512x512.py']

model = dict(
    backbone=dict(type='ShrunkVisionTransformer', shrink_idx=8, out_indices=(7, 23)),
    neck=dict(type='QueryUpsampling', in_channels=1024, embed_dims=512, query_grid=(32, 32),
              num_layers=3, num_heads=16, num_levels=2),
    decode_head=dict(in_channels=512, use_stages=1, use_proj=False, per_layer_outputs=True,
                     sum_masks=False))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'neck': dict(lr_mult=10.0)}))
