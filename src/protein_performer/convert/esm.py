"""ESM-2 (Hugging Face ``EsmForMaskedLM``, ``EsmForSequenceClassification``, ``EsmModel``) → :class:`PerformerLM`.

ESM-2 is the architecture this project's model follows, so the mapping is one to one: rotary positions
(base 10000, channel i paired with i + d/2) with the source's stored frequencies, pre-LayerNorm blocks,
exact (erf) GELU, the final ``emb_layer_norm_after``, token dropout's embedding scaling, and the dense →
GELU → LayerNorm → tied decoder + bias head. A source without the masked-LM head (a classifier, or the
bare encoder) converts without one: it gives embeddings. Refused, with the reason: ESM-1b's learned
absolute positions, another rotary base, another activation, ESMFold, an untied decoder.
"""

from __future__ import annotations

import torch

from ..model import PerformerConfig
from ..rundir import ROTARY_FREQUENCIES
from .common import ConversionError, Converted, SourceTensors, tied_decoder, vocabulary_rows

# fair-esm's ESM-2 alphabet (the Hugging Face tokenizer's vocab.txt), used when a directory has none.
ESM2_VOCABULARY = ("<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>")
ROTARY_BASE = 10000.0
# Where transformers keeps the rotary frequencies: 4.x in every layer; 5.x once for the model, which
# its save_pretrained writes under the layer name with a literal "*" for the index.
FREQUENCIES = ("esm.rotary_embeddings.inv_freq", "esm.encoder.layer.{}.attention.self.rotary_embeddings.inv_freq")
# A learned position table that transformers 4.x saved even for rotary models, which never read it.
UNUSED_POSITIONS = "esm.embeddings.position_embeddings.weight"


def esm_config(hf: dict) -> PerformerConfig:
    """Our config for an ``EsmConfig`` (as a dict), exact attention; refuses what the model cannot express."""
    positions = hf.get("position_embedding_type", "absolute")
    if positions != "rotary":
        raise ConversionError(f"ESM with {positions!r} position embeddings (ESM-1b, ESM-1v) is not supported: "
                              f"only rotary ESM-2 models convert")
    base = hf.get("rope_theta", hf.get("rotary_base", ROTARY_BASE))
    if float(base) != ROTARY_BASE:
        raise ConversionError(f"rotary base {base} is not supported: "
                              f"protein-performer's rotary positions use base {ROTARY_BASE:g}")
    if hf.get("is_folding_model"):
        raise ConversionError("ESMFold (is_folding_model) is not a masked language model: convert an EsmForMaskedLM")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"hidden_act {hf['hidden_act']!r} is not supported: ESM-2 uses 'gelu'")
    return PerformerConfig(
        d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"], dropout=hf.get("hidden_dropout_prob", 0.0), attention="softmax",
        positions="rotary", layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        embed_norm=bool(hf.get("emb_layer_norm_before")), token_dropout=bool(hf.get("token_dropout", False)),
    )


def stored_frequencies(w: SourceTensors, num_layers: int) -> tuple[torch.Tensor | None, list[str]]:
    """The rotary frequencies the source stores (one set; every layer's must agree), or None."""
    names = [FREQUENCIES[0]] + [FREQUENCIES[1].format(i) for i in ("*", *range(num_layers))]
    stored = [(name, w(name)) for name in names if name in w]
    if not stored:
        return None, ["the source stores no rotary frequencies: the standard ones are used"]
    first_name, first = stored[0]
    for name, tensor in stored[1:]:
        if not torch.equal(tensor, first):
            raise ConversionError(f"{name} differs from {first_name}: protein-performer rotates every layer alike")
    return first, []


def convert_esm(hf: dict, tensors: dict, vocabulary: list[str]) -> Converted:
    config = esm_config(hf)
    if len(vocabulary) != hf["vocab_size"]:
        raise ConversionError(f"the vocabulary has {len(vocabulary)} tokens, the model {hf['vocab_size']}")
    rows, notes = vocabulary_rows(vocabulary)
    if not any(name.startswith("esm.") for name in tensors):  # a bare EsmModel saves its names unprefixed
        tensors = {f"esm.{name}": tensor for name, tensor in tensors.items()}
    w = SourceTensors(tensors, "ESM-2")
    head = "lm_head.dense.weight" in w
    if not head:
        config = config.replace(lm_head=False)
        notes.append("the source has no masked-LM head (lm_head.*): the converted model gives embeddings "
                     "(`embed`, probes); `score`, `fill-mask` and `evaluate` need a masked LM")
    frequencies, frequency_notes = stored_frequencies(w, config.num_layers)
    notes += frequency_notes
    if UNUSED_POSITIONS in w:
        w.ignore(UNUSED_POSITIONS)
        notes.append(f"ignored {UNUSED_POSITIONS}: a learned position table rotary ESM-2 never reads "
                     f"(transformers 4.x saves one)")
    embedding = w("esm.embeddings.word_embeddings.weight")
    out = {"embed_tokens.weight": embedding[rows]}
    if frequencies is not None:
        out[ROTARY_FREQUENCIES] = frequencies
    if config.embed_norm:
        out.update(w.linear("esm.embeddings.layer_norm", "embed_norm"))
    for i in range(config.num_layers):
        src, dst = f"esm.encoder.layer.{i}", f"blocks.{i}"
        out.update(w.linear(f"{src}.attention.LayerNorm", f"{dst}.attn_norm"))
        out.update(w.attention(f"{src}.attention.self", f"{dst}.attn.in_proj"))
        out.update(w.linear(f"{src}.attention.output.dense", f"{dst}.attn.out_proj"))
        out.update(w.linear(f"{src}.LayerNorm", f"{dst}.ff_norm"))
        out.update(w.linear(f"{src}.intermediate.dense", f"{dst}.ff.fc1"))
        out.update(w.linear(f"{src}.output.dense", f"{dst}.ff.fc2"))
    out.update(w.linear("esm.encoder.emb_layer_norm_after", "final_norm"))
    if head:
        out.update(w.linear("lm_head.dense", "lm_head.dense"))
        out.update(w.linear("lm_head.layer_norm", "lm_head.norm"))
        out["lm_head.bias"] = w("lm_head.bias")[rows]
        tied_decoder(w, "lm_head.decoder.weight", embedding)
    return Converted(config, out, notes + w.ignored_note(body=("esm.encoder.", "esm.embeddings.")))
