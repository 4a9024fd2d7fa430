# DenseCLIP with pre-model prompting (paper Sec. 3.3) at tiny widths on the synthetic shapes
# data (CPU): denseclip_tiny_synthetic.py with the post-model context decoder replaced by
# PreModelPrompting, whose 8 query tokens read the visual context and become the text
# encoder's context tokens (the tiny text tower then runs per image).
_base_ = ['./denseclip_tiny_synthetic.py']

model = dict(
    context_decoder=None,
    pre_prompting=dict(
        type='PreModelPrompting', visual_dim=32, token_dim=32, num_queries=8, embed_dims=32,
        num_heads=2, num_layers=2, dropout=0.1))
