"""A minimal plain-torch re-implementation of timm's VisionTransformer / VisionTransformerDistilled
forward (timm 1.0.x, timm/models/vision_transformer.py + deit.py), with the *same* state-dict
key names, so a timm ViT/DeiT/DeiT-III state dict loads with strict=True and gives the same
logits, without importing timm or torchvision.

Covered: class token, DeiT distillation token + head_dist (eval: mean of the two heads),
register tokens, pos_embed with or without prefix-token entries (no_embed_class), LayerScale
(ls1/ls2.gamma), qk_norm (attn.q_norm/k_norm), qkv_bias on/off, global_pool 'token' or 'avg'
with fc_norm or final norm, fused (F.scaled_dot_product_attention) or manual attention.
Not covered: 'map'/'prr' attention pooling, pre_norm (norm_pre), dynamic_img_size, RmsNorm,
SwiGLU, parallel blocks, patch dropout.

Also: ``resample_abs_pos_embed`` copied in behaviour from timm/layers/pos_embed.py, and
``config_from_state_dict`` which infers everything shapes can tell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TimmViTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12  # NOT in the state dict: take it from the model name or the user
    mlp_hidden: int = 3072
    qkv_bias: bool = True
    qk_norm: bool = False
    init_values: float | None = None  # LayerScale present?
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    global_pool: str = "token"  # 'token' | 'avg'
    fc_norm: bool = False  # norm after pooling (timm default for 'avg' unless fc_norm=False)
    distilled: bool = False
    eps: float = 1e-6  # timm LayerNorm default (timm/layers/norm.py)
    fused_attn: bool = False  # timm default True when F.scaled_dot_product_attention exists
    static_batch_reshape: bool = False  # True: reshape with -1 for batch (edgevit style), fewer Shape ops


class Attention(nn.Module):
    def __init__(self, c: TimmViTConfig, num_tokens: int):
        super().__init__()
        d = c.embed_dim
        self.num_heads = c.num_heads
        self.head_dim = d // c.num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = c.fused_attn
        self.static = c.static_batch_reshape
        self.num_tokens = num_tokens
        self.qkv = nn.Linear(d, d * 3, bias=c.qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=c.eps) if c.qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=c.eps) if c.qk_norm else nn.Identity()
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static:
            B, N, C = -1, self.num_tokens, self.num_heads * self.head_dim
        else:
            B, N, C = x.shape  # timm: traced as Shape/Gather in the ONNX graph
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU, as timm's default act_layer
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, c: TimmViTConfig, num_tokens: int):
        super().__init__()
        d = c.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=c.eps)
        self.attn = Attention(c, num_tokens)
        self.ls1 = LayerScale(d, c.init_values) if c.init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=c.eps)
        self.mlp = Mlp(d, c.mlp_hidden)
        self.ls2 = LayerScale(d, c.init_values) if c.init_values else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, c: TimmViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(c.in_chans, c.embed_dim, kernel_size=c.patch_size, stride=c.patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # B, N, D (timm output_fmt NCHW -> flatten)


class TimmLikeViT(nn.Module):
    def __init__(self, c: TimmViTConfig):
        super().__init__()
        self.c = c
        d = c.embed_dim
        grid = c.img_size // c.patch_size
        self.num_prefix_tokens = int(c.class_token) + int(c.distilled) + c.reg_tokens
        self.patch_embed = PatchEmbed(c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if c.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if c.distilled else None
        self.reg_token = nn.Parameter(torch.zeros(1, c.reg_tokens, d)) if c.reg_tokens else None
        embed_len = grid * grid + (0 if c.no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.randn(1, embed_len, d) * 0.02)
        n_tok = grid * grid + self.num_prefix_tokens
        self.blocks = nn.Sequential(*[Block(c, n_tok) for _ in range(c.depth)])
        use_fc_norm = c.global_pool == "avg" and c.fc_norm
        self.norm = nn.LayerNorm(d, eps=c.eps) if not use_fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(d, eps=c.eps) if use_fc_norm else nn.Identity()
        self.head = nn.Linear(d, c.num_classes)
        self.head_dist = nn.Linear(d, c.num_classes) if c.distilled else None

    def _pos_embed(self, x):
        B = x.shape[0]
        to_cat = []
        if self.cls_token is not None:
            to_cat.append(self.cls_token.expand(B, -1, -1))
        if self.dist_token is not None:  # deit.py: cls, dist, patches
            to_cat.append(self.dist_token.expand(B, -1, -1))
        if self.reg_token is not None:  # vision_transformer.py: cls, reg, patches
            to_cat.append(self.reg_token.expand(B, -1, -1))
        if self.c.no_embed_class:  # DeiT-III / reg models: add to patches, then concat
            x = x + self.pos_embed
            return torch.cat([*to_cat, x], dim=1) if to_cat else x
        x = torch.cat([*to_cat, x], dim=1) if to_cat else x
        return x + self.pos_embed

    def forward(self, x):
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.blocks(x)
        x = self.norm(x)
        if self.c.distilled:
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2  # eval / non-distilled-training path
        x = x[:, self.num_prefix_tokens :].mean(dim=1) if self.c.global_pool == "avg" else x[:, 0]
        return self.head(self.fc_norm(x))


def resample_abs_pos_embed(
    posemb, new_size, old_size=None, num_prefix_tokens=1, interpolation="bicubic", antialias=True
):
    """Same algorithm as timm.layers.pos_embed.resample_abs_pos_embed."""
    num_pos_tokens = posemb.shape[1]
    num_new_tokens = new_size[0] * new_size[1] + num_prefix_tokens
    if num_new_tokens == num_pos_tokens and new_size[0] == new_size[1]:
        return posemb
    if old_size is None:
        hw = int(math.sqrt(num_pos_tokens - num_prefix_tokens))
        old_size = hw, hw
    if num_prefix_tokens:
        posemb_prefix, posemb = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    else:
        posemb_prefix = None
    embed_dim = posemb.shape[-1]
    orig_dtype = posemb.dtype
    posemb = posemb.float()
    posemb = posemb.reshape(1, old_size[0], old_size[1], -1).permute(0, 3, 1, 2)
    posemb = F.interpolate(posemb, size=new_size, mode=interpolation, antialias=antialias)
    posemb = posemb.permute(0, 2, 3, 1).reshape(1, -1, embed_dim).to(orig_dtype)
    if posemb_prefix is not None:
        posemb = torch.cat([posemb_prefix, posemb], dim=1)
    return posemb


def config_from_state_dict(sd: dict, num_heads: int, img_size: int | None = None) -> TimmViTConfig:
    """Infer a TimmViTConfig from a timm ViT/DeiT state dict (num_heads must be given)."""
    w = sd["patch_embed.proj.weight"]  # (D, C, p, p)
    embed_dim, in_chans, patch = w.shape[0], w.shape[1], w.shape[2]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    class_token = "cls_token" in sd
    distilled = "dist_token" in sd
    reg = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    prefix = int(class_token) + int(distilled) + reg
    pos_len = sd["pos_embed"].shape[1]

    # pos_embed either includes the prefix tokens or not (no_embed_class); the grid must be square
    def _square(n):
        r = math.isqrt(n)
        return r if r * r == n else None

    g_with = _square(pos_len - prefix) if pos_len >= prefix else None
    g_without = _square(pos_len)
    if prefix and g_with is not None and (g_without is None):
        no_embed_class, grid = False, g_with
    elif g_without is not None and (not prefix or g_with is None):
        no_embed_class, grid = True, g_without
    else:  # both square (e.g. prefix 4 reg tokens?): prefer the timm default
        no_embed_class, grid = False, g_with
    has_fc_norm = "fc_norm.weight" in sd
    return TimmViTConfig(
        img_size=img_size or grid * patch,
        patch_size=patch,
        in_chans=in_chans,
        num_classes=sd["head.weight"].shape[0],
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        qk_norm="blocks.0.attn.q_norm.weight" in sd,
        init_values=1.0 if "blocks.0.ls1.gamma" in sd else None,
        class_token=class_token,
        reg_tokens=reg,
        no_embed_class=no_embed_class,
        # fc_norm exists only for avg/avgmax/max pooling; no class token forces a pooled head.
        # (class token + avg pool + fc_norm=False would look like 'token': shapes cannot tell.)
        global_pool="avg" if (has_fc_norm or not class_token) else "token",
        fc_norm=has_fc_norm,
        distilled=distilled,
    )
