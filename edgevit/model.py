"""Vision Transformer (Dosovitskiy et al., 2020), decomposed as in timm.

``PatchEmbed`` -> class token + learned position embeddings -> ``depth`` pre-LayerNorm
``Block``s (LayerNorm -> multi-head self-attention -> residual; LayerNorm -> GELU MLP ->
residual) -> final LayerNorm -> linear head on the class token.

Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.N.norm1``, ``blocks.N.attn.qkv``, ``blocks.N.attn.proj``,
``blocks.N.norm2``, ``blocks.N.mlp.fc1``, ``blocks.N.mlp.fc2``, ``norm``, ``head``), so a
timm ViT/DeiT state dict of the same shape loads with ``strict=True``. The options of
timm's ViT/DeiT family that foreign checkpoints use are covered too (see
:class:`~edgevit.config.ViTConfig`): DeiT's distillation token and ``head_dist`` (inference
averages the two heads, as DeiT does), register tokens, DeiT-III's position embeddings
without the prefix tokens, average pooling with ``fc_norm``, LayerScale (``ls1/ls2.gamma``),
``q_norm``/``k_norm`` and the LayerNorm epsilon.

Reshapes use ``-1`` for the batch and config constants for everything else, so the
exported ONNX graph has static shapes apart from the batch axis.
"""

from __future__ import annotations

import torch
from torch import nn

from edgevit.config import ViTConfig


class PatchEmbed(nn.Module):
    """Image to patch tokens with one strided convolution.

    Args:
        img_size: input side in pixels (square).
        patch_size: patch side in pixels; ``img_size`` must be a multiple.
        in_chans: input channels.
        embed_dim: token width.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # B, D, H/p, W/p
        return x.flatten(2).transpose(1, 2)  # B, N, D


class Attention(nn.Module):
    """Multi-head self-attention with explicit batch matmuls (Q.K^T, softmax.V), which
    export as two MatMul nodes that can carry Q/DQ.

    Args:
        dim: token width.
        num_tokens: sequence length (patches + class token), fixed by the config.
        num_heads: attention heads; ``dim`` must be divisible by it.
        qkv_bias: learn a bias for the fused QKV projection.
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_tokens: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        qk_norm: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.num_tokens = num_tokens
        self.dim = dim
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if qk_norm:  # only created when used: timm state dicts have these keys only then
            self.q_norm = nn.LayerNorm(self.head_dim, eps=eps)
            self.k_norm = nn.LayerNorm(self.head_dim, eps=eps)
        self.qk_norm = qk_norm
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, hd = self.num_tokens, self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(-1, n, 3, h, hd).permute(2, 0, 3, 1, 4)  # 3, B, heads, N, head_dim
        q, k, v = qkv.unbind(0)  # each B, heads, N, head_dim
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # B, heads, N, N
        attn = attn.softmax(dim=-1)
        x = attn @ v  # B, heads, N, head_dim
        x = x.transpose(1, 2).reshape(-1, n, self.dim)  # B, N, D
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, with dropout after each linear when ``drop > 0``.

    Args:
        in_features: token width.
        hidden_features: width of the hidden layer (``mlp_ratio * in_features``).
        drop: dropout probability.
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (Touvron et al., CaiT / DeiT-III);
    the parameter is ``gamma`` as in timm.

    Args:
        dim: token width.
        init_value: initial scale of every channel.
    """

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-LayerNorm transformer encoder block.

    Args:
        dim: token width.
        num_tokens: sequence length.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        qkv_bias: learn a QKV bias.
        drop: dropout after the attention and MLP projections.
        eps: LayerNorm epsilon.
        layer_scale: scale both residual branches by learned per-channel factors.
        qk_norm: LayerNorm on queries and keys.
    """

    def __init__(
        self,
        dim: int,
        num_tokens: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool = True,
        drop: float = 0.0,
        eps: float = 1e-6,
        layer_scale: bool = False,
        qk_norm: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_tokens, num_heads, qkv_bias=qkv_bias, proj_drop=drop, qk_norm=qk_norm, eps=eps)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT classifier built from a :class:`~edgevit.config.ViTConfig`.

    Args:
        cfg: architecture; see ``ViTConfig`` for each field and ``PRESETS`` for sizes.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, d)
        # Prefix tokens in timm's order: class, distillation (DeiT) or registers, then patches.
        if cfg.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if cfg.dist_token:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        if cfg.reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_embed_len, d))
        self.pos_drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                Block(
                    d,
                    cfg.num_tokens,
                    cfg.num_heads,
                    cfg.mlp_ratio,
                    cfg.qkv_bias,
                    cfg.drop_rate,
                    eps=cfg.layer_norm_eps,
                    layer_scale=cfg.layer_scale,
                    qk_norm=cfg.qk_norm,
                )
                for _ in range(cfg.depth)
            ]
        )
        # timm: the final LayerNorm sits before pooling (`norm`), or after it (`fc_norm`)
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if not cfg.fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if cfg.fc_norm else nn.Identity()
        self.head = nn.Linear(d, cfg.num_classes)
        if cfg.dist_token:
            self.head_dist = nn.Linear(d, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for name in ("cls_token", "dist_token", "reg_token"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name), std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _prefix(self, batch: torch.Tensor) -> list[torch.Tensor]:
        tokens = []
        for name in ("cls_token", "dist_token", "reg_token"):
            if hasattr(self, name):
                t = getattr(self, name)
                tokens.append(t.expand(batch.shape[0], -1, -1))
        return tokens

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images B x C x H x W -> normalized tokens B x (prefix + N) x D."""
        x = self.patch_embed(x)  # B, N, D
        prefix = self._prefix(x)
        if self.cfg.no_embed_class:  # DeiT-III: position embeddings on the patches only
            x = torch.cat([*prefix, x + self.pos_embed], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed  # B, prefix + N, D
        x = self.blocks(self.pos_drop(x))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens B x (prefix + N) x D -> logits B x num_classes: from the class token (and
        the mean with the distillation head, as DeiT infers), or the mean patch token."""
        if self.cfg.dist_token:
            return (self.head(self.fc_norm(x[:, 0])) + self.head_dist(self.fc_norm(x[:, 1]))) / 2
        pooled = x[:, self.num_prefix_tokens :].mean(dim=1) if self.cfg.global_pool == "avg" else x[:, 0]
        return self.head(self.fc_norm(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the classification head(s): what ``--freeze-backbone`` freezes."""
        return [p for n, p in self.named_parameters() if not n.startswith(("head.", "head_dist."))]
