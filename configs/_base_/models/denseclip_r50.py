# DenseCLIP (Rao et al., CVPR 2022) RN50 + Semantic FPN, the official architecture
# (raoyongming/DenseCLIP segmentation/configs/denseclip_fpn_res50_512x512_80k.py): CLIP RN50
# image encoder with its attention pool (trained; SyncBN), 8 learnable text contexts on the
# frozen text tower, the post-model context decoder (3 layers, width 256), the pixel-text score
# map concatenated to C5, Semantic FPN head + identity head on the score map (CE 1.0 / 0.4),
# slide test 512 / 341, ADE20K-150's vocabulary.
# Weights: CLIP RN50 (OpenAI `RN50.pt`) in pretrained/.
num_classes = 150
clip_pretrained = 'pretrained/RN50.pt'
norm_cfg = dict(type='SyncBN', requires_grad=True)

data_preprocessor = dict(
    type='SegDataPreProcessor',
    # CLIP's normalisation
    mean=[122.7709383, 116.7460125, 104.09373615],
    std=[68.5005327, 66.6321579, 70.32316305],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='DenseCLIP',
    data_preprocessor=data_preprocessor,
    vocabulary='ade150',  # raw class names (no template), each <= 3 BPE tokens
    backbone=dict(
        type='CLIPResNetWithAttention',
        # OpenAI's RN50 and the official text encoder use QuickGELU; open_clip's plain 'RN50'
        # builds nn.GELU in the text tower (the CLIP loader refuses OpenAI weights for it)
        clip_model='RN50-quickgelu',
        pretrained=clip_pretrained,
        input_resolution=512,  # attnpool position grid 7x7 -> 16x16 at load, as official
        out_indices=(0, 1, 2, 3),
        output_attnpool=True,
        frozen=False),
    text_encoder=dict(
        type='ContextCLIPTextEncoder',
        clip_model='RN50-quickgelu',
        pretrained=clip_pretrained,
        num_contexts=8,
        context_length=13,  # [SOT, 8 contexts, <= 3 name tokens, EOT]
        name_suffix='',
        init_std=1.0),
    context_decoder=dict(
        type='ContextDecoder',
        visual_dim=1024,
        embed_dims=256,
        num_heads=4,
        num_layers=3,
        dropout=0.1,
        gamma_init=1e-4),
    score_concat_index=3,
    tau=0.07,
    neck=dict(
        type='FPN', in_channels=[256, 512, 1024, 2048 + num_classes], out_channels=256,
        num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=256,
        dropout_ratio=0.1,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    identity_head=dict(
        type='IdentityHead',
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
