"""``PerformerLM``: a pre-LayerNorm Transformer protein language model with FAVOR (or exact) attention.

Reads top to bottom like the paper: token embedding (+ learned positions, or rotary inside attention),
``num_layers`` blocks of attention and feed-forward, a final LayerNorm and an LM head tied to the
embedding. Tensor layout: tokens ``[B, L]``, hidden states ``[B, L, E]``, logits ``[B, L, V]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..attention import FavorAttention, SoftmaxAttention
from .config import PerformerConfig
from .rotary import Rotary


def make_attention(config: PerformerConfig) -> nn.Module:
    if config.attention == "softmax":
        return SoftmaxAttention(config.d_model, config.num_heads, causal=config.causal, dropout=config.dropout)
    return FavorAttention(
        config.d_model,
        config.num_heads,
        num_features=config.num_features,
        kernel=config.kernel,
        causal=config.causal,
        orthogonal=config.orthogonal,
        norm=config.feature_norm,
        dropout=config.dropout,
        chunk_size=config.chunk_size,
    )


class FeedForward(nn.Module):
    def __init__(self, config: PerformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.d_ff)
        self.fc2 = nn.Linear(config.d_ff, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-LayerNorm residual block: ``x + attn(LN(x))``, then ``x + ff(LN(x))``."""

    def __init__(self, config: PerformerConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = make_attention(config)
        self.ff_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ff = FeedForward(config)

    def forward(self, x: Tensor, padding_mask: Tensor | None, rotary: Rotary | None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), key_padding_mask=padding_mask, qk_transform=rotary)
        return x + self.ff(self.ff_norm(x))


class LMHead(nn.Module):
    """Dense → GELU → LayerNorm → projection onto the (tied) token embedding, plus a bias (ESM's head)."""

    def __init__(self, config: PerformerConfig, embedding: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.embedding = embedding
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.norm(F.gelu(self.dense(x))), self.embedding.weight, self.bias)


class PerformerLM(nn.Module):
    def __init__(self, config: PerformerConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_idx)
        self.embed_positions = nn.Embedding(config.max_len, config.d_model) if config.positions == "learned" else None
        self.rotary = Rotary(config.d_model // config.num_heads) if config.positions == "rotary" else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.lm_head = LMHead(config, self.embed_tokens)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def _embed(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if self.embed_positions is not None and length > self.config.max_len:
            raise ValueError(f"sequence of {length} tokens is longer than this model's learned positions ({self.config.max_len})")
        x = self.embed_tokens(tokens)
        if self.embed_positions is not None:
            x = x + self.embed_positions(torch.arange(length, device=tokens.device))
        return self.dropout(x)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None, repr_layers: tuple[int, ...] = ()) -> dict:
        """tokens ``[B, L]``; padding_mask bool ``[B, L]`` (True at padding; derived from ``pad_idx``
        when None). Returns ``{"logits": [B, L, V], "representations": {layer: [B, L, E]}}``; layer 0
        is the embedding output, layer ``num_layers`` the final (normed) hidden state."""
        if padding_mask is None:
            padding_mask = tokens.eq(self.config.pad_idx)
        x = self._embed(tokens)
        mask = padding_mask if padding_mask.any() else None
        representations = {}
        if 0 in repr_layers:
            representations[0] = x
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, mask, self.rotary)
            if i in repr_layers and i != self.config.num_layers:
                representations[i] = x
        x = self.final_norm(x)
        if self.config.num_layers in repr_layers:
            representations[self.config.num_layers] = x
        return {"logits": self.lm_head(x), "representations": representations}

    @torch.no_grad()
    def attention_maps(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Every layer's attention matrix ``[B, layers, H, L, L]`` (FAVOR: the one its features imply).
        Quadratic in L: meant for analysis and contact probes of windows up to a few thousand."""
        if padding_mask is None:
            padding_mask = tokens.eq(self.config.pad_idx)
        mask = padding_mask if padding_mask.any() else None
        x = self._embed(tokens)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.attention_matrix(block.attn_norm(x), mask, self.rotary))
            x = block(x, mask, self.rotary)
        return torch.stack(maps, dim=1)

    @torch.no_grad()
    def queries_keys(self, tokens: Tensor, padding_mask: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Every layer's q, k ``[B, H, L, d]`` as its attention sees them (after rotary), one pair per
        layer; attention itself runs only inside the blocks, so memory stays linear in L."""
        if padding_mask is None:
            padding_mask = tokens.eq(self.config.pad_idx)
        mask = padding_mask if padding_mask.any() else None
        x = self._embed(tokens)
        pairs = []
        for block in self.blocks:
            pairs.append(block.attn.queries_keys(block.attn_norm(x), self.rotary))
            x = block(x, mask, self.rotary)
        return pairs

    def favor_layers(self) -> list[FavorAttention]:
        return [m for m in self.modules() if isinstance(m, FavorAttention)]

    @torch.no_grad()
    def redraw_projections(self, generator: torch.Generator) -> None:
        """Fresh random projections for every FAVOR layer, all from ``generator`` (in layer order)."""
        for layer in self.favor_layers():
            layer.redraw_projection(generator)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
