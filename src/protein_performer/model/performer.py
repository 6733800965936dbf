"""``PerformerLM``: a pre-LayerNorm Transformer protein language model with FAVOR (or exact) attention.

Reads top to bottom like the paper: token embedding (+ learned positions, or rotary inside attention),
``num_layers`` blocks of attention and feed-forward, a final LayerNorm and an LM head tied to the
embedding. Tensor layout: tokens ``[B, L]``, hidden states ``[B, L, E]``, logits ``[B, L, V]``.

The config can also describe the Transformers that ``protein_performer.convert`` reads: BERT's
post-LayerNorm blocks with an embedding LayerNorm and no final one, tanh-GELU or ReLU, and ESM-2's
token dropout (its rescaling of embeddings by the share of ``<mask>`` tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..attention import ATTENTIONS, FavorAttention, SelfAttention
from .config import PerformerConfig
from .rotary import Rotary

ACTIVATION_FUNCTIONS = {"gelu": F.gelu, "gelu_tanh": partial(F.gelu, approximate="tanh"), "relu": F.relu}
# ESM-2 masked 15% of residues and replaced 80% of those by <mask>: the share of zeroed embeddings in training.
ESM_MASK_RATIO = 0.15 * 0.8


def make_attention(config: PerformerConfig) -> nn.Module:
    """The attention layer ``config.attention`` names in the registry, given the options it takes."""
    layer = ATTENTIONS[config.attention]
    options = {"num_features": config.num_features, "kernel": config.kernel, "orthogonal": config.orthogonal,
               "norm": config.feature_norm, "chunk_size": config.chunk_size, "precision": config.feature_precision,
               "window": config.window, "bucket_size": config.bucket_size, "n_hashes": config.n_hashes,
               "max_len": config.max_len, "linformer_k": config.linformer_k}
    return layer(config.d_model, config.num_heads, causal=config.causal, dropout=config.dropout,
                 **{name: options[name] for name in layer.options})


class FeedForward(nn.Module):
    def __init__(self, config: PerformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.d_ff)
        self.fc2 = nn.Linear(config.d_ff, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.activation = ACTIVATION_FUNCTIONS[config.activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation(self.fc1(x))))


class Block(nn.Module):
    """Residual block. Pre-LayerNorm (default): ``x + attn(LN(x))``, then ``x + ff(LN(x))``;
    post-LayerNorm (BERT): ``LN(x + attn(x))``, then ``LN(x + ff(x))``. With attention "none" the
    attention sublayer is absent (no parameters): ``x + ff(LN(x))`` only."""

    def __init__(self, config: PerformerConfig):
        super().__init__()
        self.post_norm = config.norm_position == "post"
        attends = config.attention != "none"
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if attends else None
        self.attn = make_attention(config) if attends else None
        self.ff_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ff = FeedForward(config)

    def attention_input(self, x: Tensor) -> Tensor:
        return x if self.post_norm else self.attn_norm(x)

    def forward(self, x: Tensor, padding_mask: Tensor | None, rotary: Rotary | None) -> Tensor:
        if self.attn is None:
            return self.ff_norm(x + self.ff(x)) if self.post_norm else x + self.ff(self.ff_norm(x))
        attended = self.attn(self.attention_input(x), key_padding_mask=padding_mask, qk_transform=rotary)
        if self.post_norm:
            x = self.attn_norm(x + attended)
            return self.ff_norm(x + self.ff(x))
        x = x + attended
        return x + self.ff(self.ff_norm(x))


class LMHead(nn.Module):
    """Dense → GELU → LayerNorm → projection onto the (tied) token embedding, plus a bias (ESM's head;
    BERT's transform head is the same with its activation)."""

    def __init__(self, config: PerformerConfig, embedding: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.embedding = embedding
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.activation = ACTIVATION_FUNCTIONS[config.activation]

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.norm(self.activation(self.dense(x))), self.embedding.weight, self.bias)


NO_HEAD = ("this model has no language-model head (it was converted from an encoder or classifier): it gives "
           "embeddings (`embed`, `probe`); `score`, `fill-mask`, `evaluate` and training need a masked LM")


class NoLanguageModelHead(ValueError):
    """Logits asked of a model converted without its language-model head."""


class PerformerLM(nn.Module):
    def __init__(self, config: PerformerConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_idx)
        self.embed_positions = nn.Embedding(config.max_len, config.d_model) if config.positions == "learned" else None
        self.rotary = Rotary(config.d_model // config.num_heads) if config.positions == "rotary" else None
        self.embed_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.embed_norm else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.final_norm else None
        self.lm_head = LMHead(config, self.embed_tokens) if config.lm_head else None
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

    def _embed(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        length = tokens.shape[1]
        if self.embed_positions is not None and length > self.config.max_len:
            raise ValueError(f"sequence of {length} tokens is longer than this model's learned positions ({self.config.max_len}, "
                             f"<cls> and <eos> included): crop the protein, or use a model with rotary positions (any length)")
        x = self.embed_tokens(tokens)
        if self.config.token_dropout:
            # ESM-2 was trained with <mask> embeddings zeroed; it rescales so that the embedding's
            # expected size does not depend on how many tokens are masked (ratio over real tokens).
            if padding_mask is None:
                padding_mask = tokens.eq(self.config.pad_idx)
            masked = tokens.eq(self.config.mask_idx)
            observed = masked.sum(-1) / (~padding_mask).sum(-1).clamp(min=1)  # [B]
            x = x.masked_fill(masked[..., None], 0.0) * ((1 - ESM_MASK_RATIO) / (1 - observed))[:, None, None].to(x.dtype)
        if self.embed_positions is not None:
            x = x + self.embed_positions(torch.arange(length, device=tokens.device))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.dropout(x)

    def _hidden_states(self, tokens: Tensor, padding_mask: Tensor | None) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The one walk through the layers: yields the embedding output ``[B, L, E]``, then each block's
        output in turn (the last before the final norm), each with the padding mask the blocks get
        (None when nothing is padded, outside torch.compile). A block runs only when its caller asks for the next state."""
        if padding_mask is None:
            padding_mask = tokens.eq(self.config.pad_idx)
        x = self._embed(tokens, padding_mask)
        # Dropping an all-False mask lets exact attention use its fastest kernel, but asking is a host
        # sync: under torch.compile the mask always goes through (FAVOR is exact either way).
        mask = padding_mask if torch.compiler.is_compiling() or padding_mask.any() else None
        yield x, mask
        for block in self.blocks:
            x = block(x, mask, self.rotary)
            yield x, mask

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None, repr_layers: tuple[int, ...] = (), *,
                logits: bool = True) -> dict:
        """tokens ``[B, L]``; padding_mask bool ``[B, L]`` (True at padding; derived from ``pad_idx``
        when None). Returns ``{"logits": [B, L, V], "representations": {layer: [B, L, E]}}``; layer 0
        is the embedding output, layer ``num_layers`` the final (normed) hidden state. ``logits=False``:
        representations only (``"logits"`` is None), the one call a model without an LM head answers."""
        if logits and self.lm_head is None:
            raise NoLanguageModelHead(NO_HEAD)
        representations = {}
        for i, (x, _) in enumerate(self._hidden_states(tokens, padding_mask)):
            if i in repr_layers and i != self.config.num_layers:
                representations[i] = x
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.config.num_layers in repr_layers:
            representations[self.config.num_layers] = x
        return {"logits": self.lm_head(x) if logits else None, "representations": representations}

    @torch.no_grad()
    def attention_inputs(self, tokens: Tensor, padding_mask: Tensor | None = None
                         ) -> Iterator[tuple[SelfAttention, Tensor, Tensor, Tensor | None]]:
        """For each layer in order: its attention module, the q, k ``[B, H, L, d]`` it attends with
        (after rotary) and the key padding mask it gets (bool ``[B, L]``, None when nothing is padded).
        Analyses ask the module about its matrix (``attention_matrix``, ``attention_window``,
        ``received_attention``) without knowing its kind. Attention itself runs only inside the
        blocks, so memory stays linear in L."""
        if self.config.attention == "none":
            raise ValueError("this model has no attention (attention 'none', the no-context control): "
                             "there are no attention maps or queries and keys to analyze")
        for block, (x, mask) in zip(self.blocks, self._hidden_states(tokens, padding_mask)):
            q, k = block.attn.queries_keys(block.attention_input(x), self.rotary)
            yield block.attn, q, k, mask

    @torch.no_grad()
    def attention_maps(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Every layer's attention matrix ``[B, layers, H, L, L]`` (FAVOR: the one its features imply).
        Quadratic in L: meant for analysis and contact probes of windows up to a few thousand."""
        maps = [layer.attention_matrix(q.float(), k.float(), mask)
                for layer, q, k, mask in self.attention_inputs(tokens, padding_mask)]
        return torch.stack(maps, dim=1)

    @torch.no_grad()
    def queries_keys(self, tokens: Tensor, padding_mask: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Every layer's q, k ``[B, H, L, d]`` as its attention sees them (after rotary), one pair per layer."""
        return [(q, k) for _, q, k, _ in self.attention_inputs(tokens, padding_mask)]

    def favor_layers(self) -> list[FavorAttention]:
        return [m for m in self.modules() if isinstance(m, FavorAttention)]

    @torch.no_grad()
    def redraw_projections(self, generator: torch.Generator) -> None:
        """Fresh random projections for every FAVOR layer, all from ``generator`` (in layer order)."""
        for layer in self.favor_layers():
            layer.redraw_projection(generator)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
