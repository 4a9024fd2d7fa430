# ReSTR (Kim et al., CVPR 2022), the official architecture (SouthFlame/restr; docs/restr.md):
# - vision: ViT-B/16 (timm vit_base_patch16_384, IN-21k + IN-1k) at 480x480, position
#   embedding interpolated bicubically from 24x24 to 30x30 once at load, drop_path 0.1, class
#   token dropped, LayerNorm eps 1e-5 (the official ViT's nn.LayerNorm default);
# - language: 300-d word embedding, T = 20, 6 post-norm blocks (12 heads, FFN 1200),
#   Linear(300 -> 768) + LayerNorm;
# - fusion: d = 768, 2 visual-linguistic + 2 linguistic-seed pre-norm blocks, 12 heads,
#   drop_path 0.1; decoder 4 x {bilinear x2, 1x1 conv halving}, 1536 -> 96 -> 1;
# - loss: pixel BCE + 0.1 x patch BCE (patch target: official "sum > 0.8").
# The data_preprocessor (mean = std = 0.5, inputs padded to 480) is the dataset config's:
# the top-level config sets model.data_preprocessor from it.
vocab_file = 'data/refer/refcoco/vocab.txt'
model = dict(
    type='ReSTR',
    backbone=dict(
        type='VisionTransformer',
        img_size=(480, 480),
        patch_size=16,
        in_channels=3,
        embed_dims=768,
        num_layers=12,
        num_heads=12,
        mlp_ratio=4,
        out_indices=-1,
        qkv_bias=True,
        patch_bias=True,  # timm's patch embedding has a bias (mmseg's default: none)
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        with_cls_token=True,
        output_cls_token=False,
        final_norm=True,
        # official: nn.LayerNorm() everywhere (eps 1e-5), though the ViT weights were trained
        # with 1e-6 (timm's / JAX's); the published numbers come from fine-tuning with 1e-5
        norm_cfg=dict(type='LN', eps=1e-5, requires_grad=True),
        act_cfg=dict(type='GELU'),
        # the official 24x24 -> 30x30 position resize at load (timm 0.6.11: bicubic,
        # align_corners=False); inputs are padded to 480, so no resize happens in forward
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained',
                      checkpoint='pretrained/vit_base_p16_384_20220308-96dfe169.pth')),
    language_encoder=dict(
        type='ReSTRLanguageEncoder',
        vocab_file=vocab_file,
        embed_dims=300,
        out_dims=768,
        num_layers=6,
        num_heads=12,
        ffn_ratio=4,
        max_len=20,
        drop_path_rate=0.0,
        glove_file=None),
    fusion=dict(
        type='ReSTRFusionEncoder',
        visual_dims=768,
        language_dims=768,
        embed_dims=768,
        num_layers=2,
        num_heads=12,
        ffn_ratio=4,
        drop_path_rate=0.1),
    decoder=dict(type='ReSTRCoarseToFineDecoder', in_channels=1536, num_upsamples=4),
    loss=dict(type='ReSTRLoss', patch_size=16, patch_weight=0.1, patch_target_mode='sum',
              patch_threshold=0.8),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
