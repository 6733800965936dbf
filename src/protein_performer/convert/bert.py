"""BERT and RoBERTa (Hugging Face ``BertForMaskedLM``, ``RobertaForMaskedLM``, and models built on
them such as AntiBERTy) → :class:`PerformerLM`.

Mapped: learned absolute positions (token type 0's embedding is added to every position, folded into
the position table: BERT adds it to every token of a single-segment input; RoBERTa numbers positions
from ``pad_token_id + 1``, so its table starts there), the embedding LayerNorm, post-LayerNorm blocks,
``gelu`` / ``gelu_new`` / ``relu``, and the dense → activation → LayerNorm → tied decoder + bias head.
Refused: relative position embeddings, decoders, an untied decoder, a RoBERTa whose ``hidden_act`` is
not the ``gelu`` its head always applies.
"""

from __future__ import annotations

import torch

from ..model import PerformerConfig
from .common import ConversionError, Converted, SourceTensors, tied_decoder, vocabulary_rows

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def position_offset(hf: dict) -> int:
    """The first position-table row a sequence uses: 0 for BERT, ``pad_token_id + 1`` for RoBERTa."""
    return hf.get("pad_token_id", 1) + 1 if hf["model_type"] == "roberta" else 0


def bert_config(hf: dict) -> PerformerConfig:
    """Our config for a ``BertConfig`` (as a dict), exact attention; refuses what the model cannot express."""
    positions = hf.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise ConversionError(f"BERT with {positions!r} position embeddings is not supported: only absolute positions convert")
    if hf.get("is_decoder"):
        raise ConversionError("a BERT decoder (is_decoder) is not supported: convert a bidirectional BertForMaskedLM")
    activation = hf.get("hidden_act", "gelu")
    if activation not in ACTIVATIONS:
        raise ConversionError(f"hidden_act {activation!r} is not supported: use one of {', '.join(ACTIVATIONS)}")
    if hf["model_type"] == "roberta" and activation != "gelu":
        raise ConversionError(f"RoBERTa with hidden_act {activation!r} is not supported: its LM head applies gelu, "
                              f"protein-performer's the model's activation")
    return PerformerConfig(
        d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"], dropout=hf.get("hidden_dropout_prob", 0.1), attention="softmax",
        positions="learned", max_len=hf["max_position_embeddings"] - position_offset(hf), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        norm_position="post", embed_norm=True, final_norm=False, activation=ACTIVATIONS[activation],
    )


def convert_bert(hf: dict, tensors: dict, vocabulary: list[str]) -> Converted:
    config = bert_config(hf)
    if len(vocabulary) != hf["vocab_size"]:
        raise ConversionError(f"the vocabulary has {len(vocabulary)} tokens, the model {hf['vocab_size']}")
    rows, notes = vocabulary_rows(vocabulary)
    roberta = hf["model_type"] == "roberta"
    body = "roberta" if roberta else "bert"
    w = SourceTensors(tensors, "RobertaForMaskedLM" if roberta else "BertForMaskedLM")
    embedding = w(f"{body}.embeddings.word_embeddings.weight")
    table = w(f"{body}.embeddings.position_embeddings.weight")[position_offset(hf):]
    positions = table + w(f"{body}.embeddings.token_type_embeddings.weight")[0]
    out = {"embed_tokens.weight": embedding[rows], "embed_positions.weight": positions}
    out.update(w.linear(f"{body}.embeddings.LayerNorm", "embed_norm"))
    for i in range(config.num_layers):
        src, dst = f"{body}.encoder.layer.{i}", f"blocks.{i}"
        out.update(w.attention(f"{src}.attention.self", f"{dst}.attn.in_proj"))
        out.update(w.linear(f"{src}.attention.output.dense", f"{dst}.attn.out_proj"))
        out.update(w.linear(f"{src}.attention.output.LayerNorm", f"{dst}.attn_norm"))
        out.update(w.linear(f"{src}.intermediate.dense", f"{dst}.ff.fc1"))
        out.update(w.linear(f"{src}.output.dense", f"{dst}.ff.fc2"))
        out.update(w.linear(f"{src}.output.LayerNorm", f"{dst}.ff_norm"))
    head, norm, bias_name = ("lm_head", "lm_head.layer_norm", "lm_head.bias") if roberta else \
        ("cls.predictions.transform", "cls.predictions.transform.LayerNorm", "cls.predictions.bias")
    decoder = "lm_head.decoder" if roberta else "cls.predictions.decoder"
    out.update(w.linear(f"{head}.dense", "lm_head.dense"))
    out.update(w.linear(norm, "lm_head.norm"))
    bias = w(bias_name)
    if f"{decoder}.bias" in w and not torch.equal(w(f"{decoder}.bias"), bias):
        raise ConversionError(f"{decoder}.bias differs from {bias_name} (BERT and RoBERTa tie them)")
    out["lm_head.bias"] = bias[rows]
    tied_decoder(w, f"{decoder}.weight", embedding)
    return Converted(config, out, notes + w.ignored_note(body=(f"{body}.encoder.", f"{body}.embeddings.")))
