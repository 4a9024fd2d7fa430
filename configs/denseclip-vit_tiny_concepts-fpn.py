# Plain-FPN control of denseclip-vit_tiny_concepts.py (DenseCLIP Tab. 1's baseline: the same
# CLIP image encoder fine-tuned with Semantic FPN, no language): the same tiny CLIP ViT
# (lr x0.1), the same FPNAdapter, mmseg FPN and FPNHead, data, schedule and optimizer, but an
# mmseg EncoderDecoder -- no text tower, no pixel-text score map (FPN level 2 has 64 input
# channels, not 64 + 55), no context decoder, no auxiliary score-map loss. The neck is the
# list [FPNAdapter, FPN] (mmengine builds a list of model configs as a Sequential).
_base_ = ['./denseclip-vit_tiny_concepts.py']

model = dict(
    _delete_=True,
    type='EncoderDecoder',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model={{_base_.clip_model}},
        pretrained={{_base_.clip_pretrained}},
        out_indices=(0, 1, 2, 3),
        output_dense=False,  # the four block maps only
        frozen=False,
        drop_path_rate=0.1,
        interpolate_mode='bilinear',
        pos_grid=(16, 16)),
    neck=[
        dict(type='FPNAdapter', in_channels={{_base_.width}}, rescales=(2, 1, 0.5, 0.25),
             norm_cfg=dict(type='BN', requires_grad=True)),
        dict(type='FPN', in_channels=[64, 64, 64, 64], out_channels=32, num_outs=4),
    ],
    decode_head=dict(
        type='FPNHead',
        in_channels=[32, 32, 32, 32],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=32,
        dropout_ratio=0.1,
        num_classes={{_base_.num_classes}},
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
