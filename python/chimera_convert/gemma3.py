"""Gemma 3 (Gemma3ForCausalLM -> gemma3), the transforms of llama.cpp's converter:

- every `*norm.weight` (input/post-attention/pre-FFN/post-FFN layer norms, q/k norms, final norm)
  is written as 1 + w: HF's Gemma3RMSNorm multiplies by (1 + w), llama.cpp's RMSNorm by w;
- q/k projections are not permuted (gemma3 uses NEOX RoPE, HF's half-split layout);
- token_embd keeps only the rows the tokenizer defines (llama.cpp drops the out-of-vocabulary
  rows: len(tokenizer.json vocab) + len(added_tokens)); with a SentencePiece tokenizer.model
  (real Gemma checkpoints) the vocabulary is written from it (vocab_spm.py), padded to
  vocab_size, and every row is kept, as llama.cpp does;
- keys: rope.freq_base (global layers) and rope.freq_base_swa (local layers), sliding_window
  unless every layer is global, final_logit_softcapping when set. llama.cpp writes no
  sliding-window pattern and its loader assumes period 6 (5 local : 1 global); when the config's
  layer_types differ from that, this converter writes the pattern as a per-layer bool array
  (which llama.cpp's loader also reads) instead of producing a file that computes something else.
- query_pre_attn_scalar is not written; llama.cpp scales queries by 1/sqrt(head_dim) (the 27B,
  62-layer model: 1/sqrt(hidden/heads)), so a config whose scalar says otherwise is refused.
"""

from __future__ import annotations

import json
import math

import gguf

from .archs import Builder
from .checkpoint import Checkpoint
from .output import Plan


def _layer_types(b: Builder, L: int) -> list[str]:
    types = b.cfg("layer_types")
    if types is None:
        period = int(b.cfg("sliding_window_pattern", 6))
        types = ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(L)]
    if len(types) != L or any(t not in ("sliding_attention", "full_attention") for t in types):
        b.fail(f"layer_types {types} must list {L} of sliding_attention / full_attention")
    return list(types)


def _rope(b: Builder) -> tuple[float, float, float | None]:
    """(global base, local base, linear factor of the global layers or None)."""
    params = b.cfg("rope_parameters") or {}
    full = params.get("full_attention", params)
    local = params.get("sliding_attention", {})
    factor = None
    for name, p in (("full_attention", full), ("sliding_attention", local)):
        rtype = p.get("rope_type", p.get("type", "default"))
        if name == "full_attention" and rtype == "linear" and p.get("factor"):
            factor = float(p["factor"])  # Gemma 3 4B+: llama.cpp writes it as rope.scaling.*
        elif rtype != "default":
            b.fail(f"RoPE type '{rtype}' ({name}) is not supported by this converter")
    base = full.get("rope_theta", b.cfg("rope_theta", 1_000_000.0))
    base_swa = local.get("rope_theta", b.cfg("rope_local_base_freq", 10_000.0))
    return float(base), float(base_swa), factor


def _n_vocab_real(b: Builder, V: int) -> int:
    if (b.ckpt.dir / "tokenizer.model").is_file():
        return V  # the SentencePiece vocabulary is padded to vocab_size: every row is kept
    path = b.ckpt.dir / "tokenizer.json"
    if not path.is_file():
        return V
    tok = json.loads(path.read_text(encoding="utf-8"))
    return min(V, len(tok["model"]["vocab"]) + len(tok.get("added_tokens", [])))


def plan_gemma3(ckpt: Checkpoint) -> Plan:
    b = Builder(ckpt, "gemma3")
    D = int(b.cfg("hidden_size", required=True))
    L = int(b.cfg("num_hidden_layers", required=True))
    n_head = int(b.cfg("num_attention_heads", 8))
    n_kv = int(b.cfg("num_key_value_heads", 4))
    d_h = int(b.cfg("head_dim", 256))
    F = int(b.cfg("intermediate_size", required=True))
    V = int(b.cfg("vocab_size", required=True))
    if b.cfg("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        b.fail(f"hidden_activation '{b.cfg('hidden_activation')}' is not supported "
               f"(GeGLU needs gelu_pytorch_tanh)")
    if b.cfg("attention_bias", False):
        b.fail("attention_bias = true is not supported by this converter")
    if b.cfg("attn_logit_softcapping") is not None:
        b.fail("attn_logit_softcapping is not part of Gemma 3 (llama.cpp ignores it)")
    if b.cfg("use_bidirectional_attention", False):
        b.fail("use_bidirectional_attention = true (embedding models) is not supported")
    if n_head % n_kv:
        b.fail(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    scalar = float(b.cfg("query_pre_attn_scalar", 256))
    llama_scalar = D / n_head if L == 62 else d_h
    if not math.isclose(scalar, llama_scalar):
        b.fail(f"query_pre_attn_scalar {scalar} differs from what llama.cpp's gemma3 loader uses "
               f"({llama_scalar}); the file could not express it")
    types = _layer_types(b, L)
    base, base_swa, factor = _rope(b)

    p = b.plan
    p.key("add_type", "model")
    p.key("add_block_count", L)
    p.key("add_embedding_length", D)  # no vocab_size key: llama.cpp's gemma3 writes none
    p.key("add_context_length", int(b.cfg("max_position_embeddings", 131072)))
    p.key("add_feed_forward_length", F)
    p.key("add_head_count", n_head)
    p.key("add_head_count_kv", n_kv)
    p.key("add_key_length", d_h)
    p.key("add_value_length", d_h)
    p.key("add_layer_norm_rms_eps", float(b.cfg("rms_norm_eps", 1e-6)))
    p.key("add_rope_freq_base", base)
    p.key("add_rope_freq_base_swa", base_swa)
    if factor is not None:
        p.key("add_rope_scaling_type", gguf.RopeScalingType.LINEAR)
        p.key("add_rope_scaling_factor", factor)
    if (cap := b.cfg("final_logit_softcapping")):
        p.key("add_final_logit_softcapping", float(cap))
    if any(t == "sliding_attention" for t in types):
        p.key("add_sliding_window", int(b.cfg("sliding_window", 4096)))
        default = ["sliding_attention" if i % 6 < 5 else "full_attention" for i in range(L)]
        if types != default:
            p.key("add_sliding_window_pattern", [t == "sliding_attention" for t in types])

    plus_one = lambda w: w + 1.0  # noqa: E731  (HF RMSNorm scales by 1 + w)
    n_real = _n_vocab_real(b, V)
    b.add("token_embd.weight", "model.embed_tokens.weight", (V, D),
          (lambda w: w[:n_real]) if n_real < V else None, out_shape=(n_real, D))
    b.add("output_norm.weight", "model.norm.weight", (D,), plus_one)
    if b.has("lm_head.weight"):
        if not b.cfg("tie_word_embeddings", True):
            b.fail("an untied lm_head is not part of Gemma 3 (llama.cpp drops it)")
        b.ignore("lm_head.weight")
    for i in range(L):
        pre = f"model.layers.{i}."
        at = pre + "self_attn."
        b.add(f"blk.{i}.attn_norm.weight", pre + "input_layernorm.weight", (D,), plus_one)
        b.add(f"blk.{i}.attn_q.weight", at + "q_proj.weight", (n_head * d_h, D))
        b.add(f"blk.{i}.attn_k.weight", at + "k_proj.weight", (n_kv * d_h, D))
        b.add(f"blk.{i}.attn_v.weight", at + "v_proj.weight", (n_kv * d_h, D))
        b.add(f"blk.{i}.attn_output.weight", at + "o_proj.weight", (D, n_head * d_h))
        b.add(f"blk.{i}.attn_q_norm.weight", at + "q_norm.weight", (d_h,), plus_one)
        b.add(f"blk.{i}.attn_k_norm.weight", at + "k_norm.weight", (d_h,), plus_one)
        b.add(f"blk.{i}.post_attention_norm.weight", pre + "post_attention_layernorm.weight",
              (D,), plus_one)
        b.add(f"blk.{i}.ffn_norm.weight", pre + "pre_feedforward_layernorm.weight", (D,),
              plus_one)
        b.add(f"blk.{i}.ffn_gate.weight", pre + "mlp.gate_proj.weight", (F, D))
        b.add(f"blk.{i}.ffn_up.weight", pre + "mlp.up_proj.weight", (F, D))
        b.add(f"blk.{i}.ffn_down.weight", pre + "mlp.down_proj.weight", (D, F))
        b.add(f"blk.{i}.post_ffw_norm.weight", pre + "post_feedforward_layernorm.weight", (D,),
              plus_one)
    return b.finish()
