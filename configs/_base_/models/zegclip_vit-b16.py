# ZegCLIP (Zhou et al., CVPR 2023) with CLIP ViT-B/16, the official ZiqinZhou66/ZegCLIP
# architecture: frozen CLIP image encoder with deep prompts (10 tokens x 12 layers by default),
# the relationship-descriptor decoder (3 layers, 8 heads), focal(100) + dice(1) on the
# per-class masks, 512x512 crops tested by a 512 / 426 sliding window.
# The vocabulary, its seen/unseen split and the prompt templates come from the top-level config.
clip_pretrained = 'pretrained/ViT-B-16.pt'  # OpenAI CLIP ViT-B/16 (TorchScript archive)
clip_model = 'ViT-B-16-quickgelu'
num_prompt_tokens = 10

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # ImageNet statistics, as the official code (not CLIP's)
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='ZegCLIP',
    data_preprocessor=data_preprocessor,
    self_training=False,
    seen_calibration=0.1,
    backbone=dict(
        type='CLIPVisionTransformer',
        clip_model=clip_model,
        pretrained=clip_pretrained,
        frozen=True,
        out_indices=(11, ),
        output_dense=True,
        normalize_dense=True,
        num_prompt_tokens=num_prompt_tokens,
        prompt_depth=12,  # the shallow prompt + 11 deep ones (official total_d_layer=11)
        prompt_dropout=0.1,
        # The official config says drop_path_rate=0.1, but its residual blocks never call
        # their DropPath: no stochastic depth was applied.
        drop_path_rate=0.0,
        interpolate_mode='bilinear',  # official position-embedding resize
        pos_grid=(32, 32),  # resized once to the 512 crop's grid, as the official backbone
        # The official forward adds class_embedding twice to the CLS token (as the token and
        # to its position row); folded once into the position row of the loaded CLIP weights.
        fold_class_embedding=True),
    text_encoder=dict(
        type='OVCLIPTextEncoder', clip_model=clip_model, pretrained=clip_pretrained),
    decode_head=dict(
        type='ZegCLIPHead',
        in_channels=512,
        channels=512,
        num_layers=3,
        num_heads=8,
        feedforward_channels=2048,
        query_type='rd',
        loss_decode=[
            dict(type='NonExclusiveFocalLoss', alpha=0.25, gamma=2.0, loss_weight=100.0),
            dict(type='NonExclusiveDiceLoss', loss_weight=1.0),
        ]),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(426, 426)))
# The last decoder layer's value/FFN path never reaches the masks (as in the official head).
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
