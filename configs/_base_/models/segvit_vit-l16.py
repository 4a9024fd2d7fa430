# SegViT (Zhang et al., NeurIPS 2022) ViT-L/16 + ATM head, the official architecture
# (zbwxp/SegVit configs/segvit/segvit_vit-l_jax_640x640_160k_ade20k.py):
# - backbone: mmseg VisionTransformer ViT-L/16 (24 layers, 1024 wide, 16 heads) with the patch
#   embedding bias of mmseg 0.x (patch_bias=True), Segmenter's IN-21k "jax" weights converted
#   by mmseg, drop_path 0.3, no class token, no final norm; levels out_indices (7, 15, 23);
# - ATM head: embed 512 (= 1024 // 2), 16 heads, 3 ATM layers per level;
# - ATM loss: CE 1 (no object 0.1), focal 20, dice 1, on every level (deep supervision);
# - 640x640 input, slide test 640 / stride 608, ADE20K's 150 classes (the top-level configs of
#   other crops/datasets override the sizes and num_classes).
# Weights: https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/
#   vit_large_p16_384_20220308-d4efb41d.pth -> pretrained/ (keys already mmseg's).
num_classes = 150
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(640, 640))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        # mmseg's VisionTransformer; its pretrained load fails on keys that do not fit
        type='StrictVisionTransformer',
        img_size=(640, 640),
        patch_size=16,
        patch_bias=True,  # mmseg 0.x (official) patch embedding has a bias; 1.x default: none
        in_channels=3,
        embed_dims=1024,
        num_layers=24,
        num_heads=16,
        mlp_ratio=4,
        out_indices=(7, 15, 23),
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.3,
        norm_cfg=dict(type='LN', eps=1e-6, requires_grad=True),
        with_cls_token=False,
        final_norm=False,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained',
                      checkpoint='pretrained/vit_large_p16_384_20220308-d4efb41d.pth',
                      # Segmenter's final norm (timm 'norm.' -> 'ln1.'): unused without
                      # final_norm; any other key that does not fit is an error
                      ignore_unexpected=['ln1.'])),
    decode_head=dict(
        type='ATMHead',
        in_channels=1024,
        num_classes=num_classes,
        embed_dims=512,
        num_layers=3,
        num_heads=16,
        use_stages=3,
        loss_decode=dict(type='ATMLoss', loss_cls_weight=1.0, loss_mask_weight=20.0,
                         no_object_weight=0.1)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(640, 640), stride=(608, 608)))
# The official config sets it; every ATM parameter is used in each step, so it only costs time.
find_unused_parameters = True
