# DenseCLIP RN50 + Semantic FPN on ADE20K-150 with *pre-model* prompting (paper Sec. 3.3) in
# place of the released post-model context decoder: 8 learnable queries read the visual context
# [z_bar; z] through a 3-layer transformer decoder (width 256, 4 heads, dropout 0.1: the post-
# model decoder's sizes) and become the text encoder's 8 context tokens (width 512), so the
# frozen text tower runs for every image (B x 150 sequences of 13 tokens per step and per slide
# window). The paper compares this variant with post-model prompting; the official repository
# has no code or config for it (DenseCLIP issues #11, #42), so everything else is the RN50
# recipe (denseclip_fpn_r50_ade20k-512x512.py): data, AdamW lr 1e-4 / wd 1e-4, backbone x0.1,
# text tower frozen, the prompting module at lr x1, 1500 warm-up + poly 0.9, 80k, batch 32.
# No published number for this config; see docs/denseclip.md "Pre-model prompting".
_base_ = ['./denseclip_fpn_r50_ade20k-512x512.py']

model = dict(
    context_decoder=None,
    pre_prompting=dict(
        type='PreModelPrompting',
        visual_dim=1024,  # CLIP RN50 embed dim (the visual context [z_bar; z])
        token_dim=512,  # the text tower's token width
        num_queries=8,  # = text_encoder.num_contexts, which it replaces
        embed_dims=256,
        num_heads=4,
        num_layers=3,
        dropout=0.1))
