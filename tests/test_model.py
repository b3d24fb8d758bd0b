from __future__ import annotations

import torch

from edgevit.config import ViTConfig, preset
from edgevit.model import VisionTransformer

# The parameter names of timm's VisionTransformer (deit_tiny_patch16_224) for one block.
TIMM_KEYS_ONE_BLOCK = {
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "blocks.0.norm1.weight",
    "blocks.0.norm1.bias",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight",
    "blocks.0.attn.proj.bias",
    "blocks.0.norm2.weight",
    "blocks.0.norm2.bias",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc1.bias",
    "blocks.0.mlp.fc2.weight",
    "blocks.0.mlp.fc2.bias",
    "norm.weight",
    "norm.bias",
    "head.weight",
    "head.bias",
}


def test_state_dict_names_follow_timm():
    model = VisionTransformer(ViTConfig(depth=1))
    assert set(model.state_dict()) == TIMM_KEYS_ONE_BLOCK


def test_tiny_preset_matches_deit_tiny_parameter_count_and_shapes():
    model = VisionTransformer(preset("tiny"))
    assert model.num_params() == 5_717_416  # DeiT-Tiny, as timm reports it
    sd = model.state_dict()
    assert sd["pos_embed"].shape == (1, 197, 192)
    assert sd["blocks.11.attn.qkv.weight"].shape == (576, 192)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (768, 192)


def test_a_timm_shaped_state_dict_loads_strictly():
    cfg = ViTConfig(depth=2)
    src = VisionTransformer(cfg)
    # A foreign state dict: same names and shapes, other values (as one saved by timm).
    foreign = {k: torch.randn_like(v) for k, v in src.state_dict().items()}
    dst = VisionTransformer(cfg)
    dst.load_state_dict(foreign, strict=True)
    assert torch.equal(dst.blocks[1].mlp.fc2.weight, foreign["blocks.1.mlp.fc2.weight"])


def test_forward_shapes_and_head_reads_the_class_token():
    cfg = ViTConfig(embed_dim=32, depth=2, num_heads=2)
    model = VisionTransformer(cfg).eval()
    x = torch.randn(3, 1, 8, 8)
    feats = model.forward_features(x)
    assert feats.shape == (3, cfg.num_tokens, 32)
    logits = model(x)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, model.head(feats[:, 0]))


def test_attention_matches_a_reference_implementation():
    torch.manual_seed(0)
    cfg = ViTConfig(embed_dim=32, depth=1, num_heads=4)
    attn = VisionTransformer(cfg).blocks[0].attn.eval()
    x = torch.randn(2, cfg.num_tokens, 32)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True, bias=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
        expected, _ = mha(x, x, x, need_weights=False)
        torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_batch_items_are_independent():
    model = VisionTransformer(ViTConfig(depth=1)).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]), atol=1e-5, rtol=1e-5)
