# DenseCLIP (Rao et al., CVPR 2022) RN101 + Semantic FPN on ADE20K-150, the official recipe
# (raoyongming/DenseCLIP segmentation/configs/denseclip_fpn_res101_512x512_80k.py): the RN50
# config with CLIP RN101 towers. What differs from RN50: ResNet-101 stages (3, 4, 23, 3), CLIP
# embed dim 512 (attention-pool output, text projection, context decoder `visual_dim`/`outdim`,
# `gamma`); C2-C5 keep 256/512/1024/2048 channels, so the FPN is unchanged. Data, optimizer
# (AdamW lr 1e-4 / wd 1e-4, backbone x0.1, text encoder x0, contexts x1, no decay on norms),
# schedule (1500 warm-up, poly 0.9 to 1e-6, 80k), batch 4 x 8 GPUs, slide 512/341: as RN50.
# README (ADE20K val, single / multi-scale): 45.1 / 46.5 mIoU, 67.8M parameters without the
# text encoder, 346.3 GFLOPs (fvcore at 1024x1024, the official get_flops.py default shape);
# ours: docs/denseclip.md "RN101".
# Weights: CLIP RN101 (OpenAI `RN101.pt`) in pretrained/.
_base_ = ['./denseclip_fpn_r50_ade20k-512x512.py']

clip_pretrained = 'pretrained/RN101.pt'
model = dict(
    backbone=dict(clip_model='RN101-quickgelu', pretrained=clip_pretrained),
    text_encoder=dict(clip_model='RN101-quickgelu', pretrained=clip_pretrained),
    context_decoder=dict(visual_dim=512))
