# SAN ViT-L/14@336 on COCO-Stuff-164k: the ViT-B/16 recipe (san_vitb16_coco-stuff.py) with
# CLIP ViT-L/14-336 at 0.7x (640 -> 448, 32x32 grid), CLIP outputs 0/6/12/18 fused into side
# blocks 0-3, blocks 18-23 run the SLS tokens, 16 attention-bias heads, 768-d text space.
# Batch 32 = 8 GPUs x 4 images (or 4 x 8).
_base_ = ['./san_vitb16_coco-stuff.py']

clip_model = 'ViT-L-14-336-quickgelu'
clip_pretrained = 'pretrained/ViT-L-14-336px.pt'  # OpenAI CLIP ViT-L/14@336, see docs/weights.md

model = dict(
    clip_scale=0.7,
    fusion_layers=(0, 6, 12, 18),
    split_layer=18,
    backbone=dict(clip_model=clip_model, pretrained=clip_pretrained),
    text_encoder=dict(clip_model=clip_model, pretrained=clip_pretrained),
    decode_head=dict(
        side_adapter=dict(clip_channels=1024),
        bias_decoder=dict(num_heads=16),
        text_channels=768))
