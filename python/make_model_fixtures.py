#!/usr/bin/env python3
"""Builds chimera's reference model fixtures with HF transformers (float32, CPU, seeded).

    .venv/bin/pip install -r python/requirements-fixtures.txt     # torch, transformers, ...
    .venv/bin/python python/make_model_fixtures.py [--out tests/fixtures/models] [--only NAME ...]

For every model below it: builds a tiny random-weight model from a config, saves it as an HF
checkpoint, reloads that checkpoint (so the reference is computed from exactly what the converter
reads), runs it on a few token sequences and a greedy generation, and converts the checkpoint with
python/convert_hf_to_gguf.py to model-f32.gguf and model-f16.gguf. Needs the KJV text from the
Debian package bible-kjv-text (`bible` command) to train the tiny byte-level BPE tokenizer.

Output, per model, in OUT/<name>/ (format documented in OUT/README.md as well):

  model-f32.gguf, model-f16.gguf   converted by chimera's converter (norms etc. F32 in both)
  reference.json                   everything below, UTF-8 JSON
  logits-<seq>.f32                 raw little-endian float32, row-major [n_tokens][n_vocab]: the
                                   logits of EVERY position of sequence <seq>, from one full-prompt
                                   forward pass of the HF model (no cache, no padding, batch 1)
  hf/                              (only the models in CI_CHECKPOINTS) the HF checkpoint itself

reference.json keys:
  format            1
  name, hf_architecture, gguf_architecture, n_vocab (= logits row length = HF vocab_size)
  config            the HF config.json as saved
  gguf              {"f32": "model-f32.gguf", "f16": "model-f16.gguf"}
  sequences         [{"name", "tokens": [ids], "logits": file, "n_tokens"}], each sequence decoded
                    on its own from an empty state (position 0)
  batch             names of the sequences meant to be decoded together in one multi-sequence
                    batch: each one's logits must still equal its single-sequence reference
  greedy            {"prompt": [ids], "tokens": [32 ids], "top2_gaps": [32 floats]}: HF
                    generate(do_sample=False, use_cache=True); top2_gaps[i] is the margin between
                    the best and second-best logit at step i (a tiny gap makes that step fragile)
  notes             free text (e.g. the per-group gated norm of mamba2-g2)
  versions          torch / transformers / seed
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

from chimera_convert.bpe_training import (  # noqa: E402
    kjv_verses, save_tokenizer, train_tokenizer)
from convert_hf_to_gguf import convert  # noqa: E402

N_VOCAB = 384  # HF vocab_size: tokenizer defines TOKENIZER_SIZE ids, the rest become [PAD{i}]
TOKENIZER_SIZE = 376
EOT_ID, PAD_ID = 0, 3
# the HF checkpoints committed (in NAME/hf), for tests/python (test_converter.py and
# test_converter_vs_llama_cpp.py, whose reference python/make_converter_reference.py makes)
CI_CHECKPOINTS = {"granitehybrid-moe", "qwen35", "qwen35moe", "qwen3next", "nemotron_h",
                  "nemotron_h_moe", "lfm2", "lfm2moe-tied", "gemma3", "falcon-h1"}
D = 64  # hidden size of every fixture


def models() -> dict[str, dict]:
    """name -> (HF class name, config kwargs, seed, notes)."""
    mamba = dict(mamba_n_heads=8, mamba_d_head=16, mamba_d_state=16, mamba_n_groups=1,
                 mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=32)
    lfm2moe = dict(
        vocab_size=N_VOCAB, hidden_size=D, num_hidden_layers=5,
        layer_types=["conv", "conv", "full_attention", "conv", "full_attention"],
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
        moe_intermediate_size=32, num_dense_layers=1, num_experts=8,
        num_experts_per_tok=3, use_expert_bias=True, norm_topk_prob=True,
        routed_scaling_factor=1.0, conv_L_cache=4, norm_eps=1e-5,
        max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    granite4 = dict(vocab_size=N_VOCAB, hidden_size=D, num_attention_heads=4, num_key_value_heads=2,
                    rms_norm_eps=1e-5, max_position_embeddings=512,
                    position_embedding_type="nope", embedding_multiplier=4.0,
                    residual_multiplier=0.5, attention_multiplier=1 / 16, logits_scaling=2.0)
    llama = dict(vocab_size=N_VOCAB, hidden_size=D, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=96, num_hidden_layers=4, rms_norm_eps=1e-5,
                 max_position_embeddings=512)
    # Qwen3-Next / Qwen3.5: 3 gated-DeltaNet layers + 1 gated attention layer; 2 key heads shared
    # by 4 value heads (so the head maps and qwen35's value-head reordering matter), head size 32
    # with a quarter rotated (n_rot 8)
    qwen = dict(vocab_size=N_VOCAB, hidden_size=D, num_attention_heads=4, num_key_value_heads=2,
                head_dim=32, rms_norm_eps=1e-6, max_position_embeddings=512, num_hidden_layers=4,
                layer_types=["linear_attention"] * 3 + ["full_attention"],
                linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16,
                linear_num_key_heads=2, linear_num_value_heads=4, tie_word_embeddings=False)
    qwen35_rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                   "mrope_section": [2, 1, 1]}
    qwen_moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                    shared_expert_intermediate_size=48)
    return {
        "qwen35": dict(
            cls="Qwen3_5ForCausalLM", seed=107, config=dict(
                **qwen, intermediate_size=96, rope_parameters=qwen35_rope),
            notes="Qwen3.5 dense: gated DeltaNet (value heads reordered to tiled order by the "
                  "converter) + gated attention with q/k norm and partial NEOX RoPE"),
        "qwen35moe": dict(
            cls="Qwen3_5MoeForCausalLM", seed=108, config=dict(
                **qwen, **qwen_moe, rope_parameters=qwen35_rope),
            notes="Qwen3.5-MoE: 4 experts, top-2, renormalised, sigmoid-gated shared expert"),
        "qwen3next": dict(
            cls="Qwen3NextForCausalLM", seed=109, config=dict(
                **qwen, **qwen_moe, intermediate_size=96, norm_topk_prob=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "partial_rotary_factor": 0.25}),
            notes="Qwen3-Next: fused in_proj_qkvz/in_proj_ba, grouped value heads, MoE with a "
                  "sigmoid-gated shared expert"),
        "nemotron_h": dict(
            cls="NemotronHForCausalLM", seed=110, config=dict(
                vocab_size=N_VOCAB, hidden_size=D, hybrid_override_pattern="M*-M-*M-",
                num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                intermediate_size=96, mlp_hidden_act="relu2", mamba_num_heads=8,
                mamba_head_dim=16, expand=2, ssm_state_size=16, n_groups=2, conv_kernel=4,
                chunk_size=32, layer_norm_epsilon=1e-5, max_position_embeddings=512,
                time_step_min=1e-30, tie_word_embeddings=False),
            notes="Nemotron-H: Mamba2 (2 groups), NoPE attention (GQA 4/2, head_dim 32 != "
                  "hidden/heads) and non-gated squared-ReLU MLP layers, one kind per layer. "
                  "time_step_min 1e-30 (no clamp in effect): transformers 5.24 clamps dt to "
                  "time_step_min in its chunked prefill only (not in its decode step); NVIDIA's "
                  "code and llama.cpp never clamp"),
        "nemotron_h_moe": dict(
            cls="NemotronHForCausalLM", gguf_arch="nemotron_h_moe", seed=111, config=dict(
                vocab_size=N_VOCAB, hidden_size=D, hybrid_override_pattern="ME*EMM*E",
                num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                intermediate_size=96, mlp_hidden_act="relu2", mamba_num_heads=8,
                mamba_head_dim=16, expand=2, ssm_state_size=16, n_groups=2, conv_kernel=4,
                chunk_size=32, layer_norm_epsilon=1e-5, max_position_embeddings=512,
                time_step_min=1e-30, tie_word_embeddings=False, n_routed_experts=16,
                num_experts_per_tok=4, moe_intermediate_size=32,
                moe_shared_expert_intermediate_size=48, routed_scaling_factor=2.5,
                norm_topk_prob=True, n_group=1, topk_group=1),
            notes="Nemotron-H MoE (Nemotron-3-Nano layout): Mamba2 (2 groups), NoPE attention "
                  "and MoE layers of 16 squared-ReLU experts (top 4) plus a squared-ReLU shared "
                  "expert; sigmoid router with a random e_score_correction_bias (selection only), "
                  "renormalised weights times routed_scaling_factor 2.5. time_step_min as for "
                  "nemotron_h"),
        "lfm2": dict(
            cls="Lfm2ForCausalLM", seed=111, config=dict(
                vocab_size=N_VOCAB, hidden_size=D, num_hidden_layers=6,
                layer_types=["conv", "conv", "full_attention", "conv", "full_attention", "conv"],
                num_attention_heads=4, num_key_value_heads=2, intermediate_size=144,
                block_multiple_of=32, block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True,
                conv_L_cache=3, norm_eps=1e-5, max_position_embeddings=512,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                tie_word_embeddings=True),
            notes="LFM2: gated short conv (L_cache 3) and GQA 4/2 attention with q/k RMSNorm and "
                  "NEOX RoPE, dense SwiGLU FFN of 96 = 32 * ceil(int(2 * 144 / 3) / 32) "
                  "(llama.cpp's adjusted feed_forward_length), tied embeddings"),
        # seed 113: transformers with F16-rounded matrices stays within NMSE 6.5e-6 of its F32
        # logits (python/check_f16_sensitivity.py); with seed 112 one routing choice flips at
        # batch-c position 8 (NMSE 0.023) -- the model's sensitivity, not the engine's
        "lfm2moe": dict(
            cls="Lfm2MoeForCausalLM", seed=113, config=dict(lfm2moe, tie_word_embeddings=False),
            notes="LFM2-MoE: one leading dense layer, then 8 experts (3 used) with sigmoid "
                  "routing; the random expert_bias changes which experts are chosen but not their "
                  "weights (renormalised to sum 1: llama.cpp divides by max(sum, 6.1e-5), HF by "
                  "sum + 1e-6); L_cache 4, untied output"),
        # lfm2moe with a tied output, for the converter comparison with llama.cpp: its converter
        # cannot map an untied lm_head for this architecture (the real LFM2-8B-A1B is tied)
        "lfm2moe-tied": dict(
            cls="Lfm2MoeForCausalLM", seed=113, config=dict(lfm2moe, tie_word_embeddings=True),
            notes="LFM2-MoE as lfm2moe, with tied embeddings (the shape llama.cpp's converter "
                  "handles): committed for the converter comparison"),
        "falcon-h1": dict(
            cls="FalconH1ForCausalLM", gguf_arch="falcon-h1", seed=112, config=dict(
                vocab_size=N_VOCAB, hidden_size=D, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=24, intermediate_size=96, rms_norm_eps=1e-5,
                max_position_embeddings=512, rope_parameters={"rope_type": "default",
                                                              "rope_theta": 10000.0},
                mamba_d_ssm=96, mamba_n_heads=6, mamba_d_head=16, mamba_n_groups=2,
                mamba_d_state=16, mamba_d_conv=4, mamba_chunk_size=32, mamba_conv_bias=True,
                mamba_rms_norm=False, tie_word_embeddings=False,
                embedding_multiplier=1.7, lm_head_multiplier=0.6, attention_in_multiplier=0.8,
                attention_out_multiplier=1.3, key_multiplier=0.7, ssm_in_multiplier=1.2,
                ssm_out_multiplier=0.9, mlp_multipliers=[1.4, 0.75],
                ssm_multipliers=[0.6, 1.5, 0.8, 1.25, 1.1]),
            notes="Falcon-H1: attention (GQA 4/2, head_dim 24, NEOX RoPE) and Mamba2 (d_ssm 96 != "
                  "2 x hidden, 6 heads of 16, 2 groups, conv bias, no SSM norm: y * silu(z)) in "
                  "parallel on one normed input, then SwiGLU; every muP multiplier set to a "
                  "distinct non-1 value (all folded into the weights by the converter)"),
        "gemma3": dict(
            cls="Gemma3ForCausalLM", seed=111, n_vocab=TOKENIZER_SIZE, config=dict(
                vocab_size=TOKENIZER_SIZE, hidden_size=D, num_hidden_layers=7,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                query_pre_attn_scalar=32, intermediate_size=96, rms_norm_eps=1e-6,
                max_position_embeddings=512, sliding_window=8, final_logit_softcapping=15.0,
                rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                 "sliding_attention": {"rope_type": "default",
                                                       "rope_theta": 10000.0}},
                tie_word_embeddings=True),
            notes="Gemma 3: 7 layers, local (window 8, RoPE base 1e4) x5, global (base 1e6), "
                  "local; GQA 4/2 with head_dim 32 != 64/4, q/k norm, post-attention and "
                  "post-FFN norms, GeGLU (gelu tanh), embedding x sqrt(64), final logit "
                  "softcap 15; (1 + w) norms (the converter writes 1 + w). vocab_size 376 (the "
                  "tokenizer's own size: llama.cpp's converter drops embedding rows past it). "
                  "The len33/len100/random24 sequences and the greedy run are longer than the "
                  "window, so it slides"),
        "granitehybrid-dense": dict(
            cls="GraniteMoeHybridForCausalLM", seed=101, config=dict(
                **granite4, **mamba, num_hidden_layers=5,
                layer_types=["mamba", "attention", "mamba", "mamba", "attention"],
                num_local_experts=0, num_experts_per_tok=0, intermediate_size=64,
                shared_intermediate_size=64, tie_word_embeddings=True),
            notes="Granite 4.0-H style: NoPE attention, dense shared_mlp FFN, tied embeddings"),
        "granitehybrid-moe": dict(
            cls="GraniteMoeHybridForCausalLM", seed=102, config=dict(
                **granite4, **mamba, num_hidden_layers=4,
                layer_types=["mamba", "mamba", "attention", "mamba"],
                num_local_experts=4, num_experts_per_tok=2, intermediate_size=16,
                shared_intermediate_size=32, tie_word_embeddings=True),
            notes="MoE: 4 experts, top-2, softmax over the top-k logits, plus a shared expert"),
        "mamba2": dict(
            cls="Mamba2ForCausalLM", seed=103, config=dict(
                vocab_size=N_VOCAB, hidden_size=D, num_hidden_layers=4, num_heads=8, head_dim=16,
                expand=2, state_size=16, n_groups=1, conv_kernel=4, chunk_size=32,
                layer_norm_epsilon=1e-5, tie_word_embeddings=True),
            notes="pure Mamba2, n_groups = 1"),
        "mamba2-g2": dict(
            cls="Mamba2ForCausalLM", seed=104, config=dict(
                vocab_size=N_VOCAB, hidden_size=D, num_hidden_layers=3, num_heads=8, head_dim=16,
                expand=2, state_size=16, n_groups=2, conv_kernel=4, chunk_size=32,
                layer_norm_epsilon=1e-5, tie_word_embeddings=True),
            notes="n_groups = 2: B/C per group (heads 0-3 use group 0) and the gated RMSNorm "
                  "normalises each group of d_inner/n_groups channels separately (spec 3.4 step "
                  "9); transformers 5.24's MambaRMSNormGated does that natively (group_size), "
                  "checked by the generator"),
        "llama": dict(
            cls="LlamaForCausalLM", seed=105, config=dict(
                **llama, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                tie_word_embeddings=False),
            notes="GQA 4/2, RoPE (HF half-split; the GGUF has Q/K rows permuted for NORM), "
                  "untied output"),
        "granite": dict(
            cls="GraniteForCausalLM", seed=106, config=dict(
                **llama, rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
                embedding_multiplier=3.0, residual_multiplier=0.7, attention_multiplier=1 / 16,
                logits_scaling=1.5, tie_word_embeddings=True),
            notes="dense Granite 3.x style: RoPE + the four multipliers, tied embeddings"),
    }


# --------------------------------------------------------------------------------------------------
# text and tokenizer


# --------------------------------------------------------------------------------------------------
# models


def init_weights(model, gen, zero_centered_norms: bool = False) -> None:
    """Non-trivial random weights: HF's init leaves norms at 1, D at 1 and many projections tiny,
    which makes logits nearly flat and would hide mistakes. Scales keep activations O(1)."""
    import torch

    def rand(shape):
        return torch.rand(shape, generator=gen, dtype=torch.float32)

    def randn(shape):
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            s = tuple(p.shape)
            if name.endswith("A_log") and zero_centered_norms:
                # DeltaNet: A in [0.05, 1], so the state remembers a few tokens (with A ~ 16 it
                # holds only the current one and q.k cancellations dominate the output)
                p.copy_(torch.log(0.05 + 0.95 * rand(s)))
            elif name.endswith("A_log"):
                p.copy_(torch.log(1 + 15 * rand(s)))  # A in -[1, 16]
            elif name.endswith("dt_bias"):
                dt = torch.exp(math.log(1e-3) + rand(s) * (math.log(1e-1) - math.log(1e-3)))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus of dt
            elif name.endswith(".D"):
                p.copy_(0.5 + rand(s))
            elif p.ndim == 1 and "norm" in name and zero_centered_norms and \
                    "linear_attn.norm" not in name:
                p.copy_(0.8 * rand(s) - 0.4)  # HF multiplies by 1 + w: scales in [0.6, 1.4]
            elif p.ndim == 1 and "norm" in name:
                p.copy_(0.6 + 0.8 * rand(s))
            elif "conv1d.weight" in name:
                p.copy_((rand(s) - 0.5))
            elif "conv1d.bias" in name:
                p.copy_(0.2 * (rand(s) - 0.5))
            elif "embed" in name:
                p.copy_(0.5 * randn(s))
            elif name.startswith("lm_head"):
                p.copy_(0.4 * randn(s))
            elif p.ndim >= 2:
                p.copy_(randn(s) / math.sqrt(s[-1]))
            else:
                p.copy_(0.05 * randn(s))
        # LFM2-MoE's selection-only expert bias is a buffer: random, so it changes the choice
        for name, buf in sorted(model.named_buffers(), key=lambda kv: kv[0]):
            if name.endswith("expert_bias"):
                buf.copy_(0.5 * randn(tuple(buf.shape)))


def build_and_save(name: str, spec: dict, hf_tok, directory: Path):
    import torch
    import transformers

    cls = getattr(transformers, spec["cls"])
    config_cls = cls.config_class
    cfg = config_cls(**spec["config"], bos_token_id=EOT_ID, eos_token_id=EOT_ID,
                     pad_token_id=PAD_ID)
    cfg.architectures = [spec["cls"]]
    torch.manual_seed(spec["seed"])
    model = cls(cfg).float().eval()
    gen = torch.Generator().manual_seed(spec["seed"])
    init_weights(model, gen, zero_centered_norms=spec["cls"].startswith(("Qwen3", "Gemma3")))
    with torch.no_grad():  # selection biases are buffers (HF leaves them 0): make them matter
        for bname, buf in sorted(model.named_buffers(), key=lambda kv: kv[0]):
            if bname.endswith("e_score_correction_bias"):
                buf.copy_(0.1 * torch.randn(tuple(buf.shape), generator=gen))
    model.save_pretrained(directory)
    save_tokenizer(hf_tok, directory, template_in_config=True)
    # reference from the checkpoint as saved, so converter input and reference cannot drift
    model = cls.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()
    check_gated_norm(model, spec)
    return model


def check_gated_norm(model, spec) -> None:
    """Spec 3.4 step 9: the gated RMSNorm must be per group; fail loudly if this transformers
    version normalises over the whole d_inner (then the reference would need patching)."""
    for mod_name, mod in model.named_modules():
        if type(mod).__name__.endswith("RMSNormGated"):
            groups = spec["config"].get("n_groups", spec["config"].get("mamba_n_groups", 1))
            d_in = mod.weight.shape[0]
            if getattr(mod, "group_size", d_in) != d_in // groups:
                sys.exit(f"{mod_name}: gated norm group_size {getattr(mod, 'group_size', None)} "
                         f"!= d_inner/n_groups; this transformers version needs a patch")


def sequences(hf_tok, verses: list[str], n_vocab: int = N_VOCAB) -> list[dict]:
    """Token sequences: real text (lengths 1, 7, 33, 100 and three more for the batch) and one of
    uniformly random ids over the whole vocabulary (special and [PAD] ids included)."""
    def text_tokens(start_verse: int, n: int) -> list[int]:
        ids: list[int] = []
        v = start_verse
        while len(ids) < n:
            ids += hf_tok(verses[v] + "\n", add_special_tokens=False)["input_ids"]
            v += 1
        return ids[:n]

    seqs = [("len1", text_tokens(0, 1)), ("len7", text_tokens(1000, 7)),
            ("len33", text_tokens(5000, 33)), ("len100", text_tokens(12000, 100)),
            ("batch-a", text_tokens(20000, 5)), ("batch-b", text_tokens(23000, 12)),
            ("batch-c", text_tokens(26000, 19))]
    rng = np.random.default_rng(7)
    seqs.append(("random24", [int(x) for x in rng.integers(0, n_vocab, size=24)]))
    return [{"name": n, "tokens": t} for n, t in seqs]


def run_reference(model, seqs: list[dict], prompt: list[int], out_dir: Path,
                  n_vocab: int = N_VOCAB) -> dict:
    import torch

    stats = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s["tokens"]], dtype=torch.long)
            logits = model(input_ids=ids, use_cache=False).logits[0].float().numpy()
            assert logits.shape == (len(s["tokens"]), n_vocab), logits.shape
            assert np.isfinite(logits).all()
            fname = f"logits-{s['name']}.f32"
            logits.astype("<f4").tofile(out_dir / fname)
            s.update(logits=fname, n_tokens=len(s["tokens"]))
            stats.append(float(logits.std()))
        # right-padded HF batch of the batch-* sequences: not stored, printed as a sanity figure
        batch = [s for s in seqs if s["name"].startswith("batch-")]
        T = max(len(s["tokens"]) for s in batch)
        ids = torch.full((len(batch), T), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for i, s in enumerate(batch):
            ids[i, :len(s["tokens"])] = torch.tensor(s["tokens"])
            mask[i, :len(s["tokens"])] = 1
        out = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float().numpy()
        batch_diff = 0.0
        for i, s in enumerate(batch):
            ref = np.fromfile(out_dir / s["logits"], dtype="<f4").reshape(len(s["tokens"]), -1)
            batch_diff = max(batch_diff, float(np.abs(out[i, :len(s["tokens"])] - ref).max()))

        g = model.generate(torch.tensor([prompt]), attention_mask=torch.ones((1, len(prompt)),
                           dtype=torch.long), max_new_tokens=32, do_sample=False, use_cache=True,
                           eos_token_id=None, pad_token_id=PAD_ID, output_scores=True,
                           return_dict_in_generate=True)
    new = g.sequences[0, len(prompt):].tolist()
    assert len(new) == 32, len(new)
    gaps = []
    for step in g.scores:
        top = torch.topk(step[0].float(), 2).values
        gaps.append(float(top[0] - top[1]))
    return {"greedy": {"prompt": prompt, "tokens": new, "top2_gaps": gaps},
            "logit_std": float(np.mean(stats)), "hf_batch_max_abs_diff": batch_diff}


def summarize_gguf(path: Path) -> str:
    import gguf

    r = gguf.GGUFReader(str(path))
    n_params = sum(int(t.n_elements) for t in r.tensors)
    types = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    return (f"{path.name}: arch={arch} tensors={len(r.tensors)} params={n_params} types={types} "
            f"kv={len(r.fields)} size={path.stat().st_size}")


def main() -> int:
    ap = argparse.ArgumentParser(description="generate tests/fixtures/models")
    ap.add_argument("--out", default=str(REPO / "tests/fixtures/models"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--work", default=str(REPO / "build-fixtures-tmp"),
                    help="scratch directory for the HF checkpoints that are not committed")
    args = ap.parse_args()

    import torch
    import transformers

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out_root, work = Path(args.out), Path(args.work)
    out_root.mkdir(parents=True, exist_ok=True)
    verses = kjv_verses()
    hf_tok = train_tokenizer(verses, TOKENIZER_SIZE)
    prompt = hf_tok("And God said", add_special_tokens=False)["input_ids"]

    for name, spec in models().items():
        if args.only and name not in args.only:
            continue
        out_dir = out_root / name
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        hf_dir = out_dir / "hf" if name in CI_CHECKPOINTS else work / name
        if hf_dir.exists():
            shutil.rmtree(hf_dir)
        model = build_and_save(name, spec, hf_tok, hf_dir)
        n_vocab = spec.get("n_vocab", N_VOCAB)
        seqs = sequences(hf_tok, verses, n_vocab)
        ref = run_reference(model, seqs, prompt, out_dir, n_vocab)
        for outtype in ("f32", "f16"):
            convert(hf_dir, out_dir / f"model-{outtype}.gguf", outtype, model_name=name)
        config = json.loads((hf_dir / "config.json").read_text())
        doc = {
            "format": 1,
            "name": name,
            "hf_architecture": spec["cls"],
            "gguf_architecture": spec.get("gguf_arch") or {"GraniteMoeHybridForCausalLM": "granitehybrid",
                                  "Mamba2ForCausalLM": "mamba2", "LlamaForCausalLM": "llama",
                                  "GraniteForCausalLM": "granite",
                                  "Qwen3_5ForCausalLM": "qwen35",
                                  "Qwen3_5MoeForCausalLM": "qwen35moe",
                                  "Qwen3NextForCausalLM": "qwen3next",
                                  "NemotronHForCausalLM": "nemotron_h",
                                  "Lfm2ForCausalLM": "lfm2",
                                  "Lfm2MoeForCausalLM": "lfm2moe",
                                  "Gemma3ForCausalLM": "gemma3"}[spec["cls"]],
            "n_vocab": n_vocab,
            "config": config,
            "gguf": {"f32": "model-f32.gguf", "f16": "model-f16.gguf"},
            "sequences": seqs,
            "batch": [s["name"] for s in seqs],
            "greedy": ref["greedy"],
            "notes": spec["notes"],
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "seed": spec["seed"], "dtype": "float32", "device": "cpu",
                         "attn_implementation": "eager"},
        }
        (out_dir / "reference.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(f"[{name}] logit std {ref['logit_std']:.3f}, min greedy top-2 gap "
              f"{min(ref['greedy']['top2_gaps']):.4f}, HF right-padded batch vs single max |diff| "
              f"{ref['hf_batch_max_abs_diff']:.3g}")
        for outtype in ("f32", "f16"):
            print("   ", summarize_gguf(out_dir / f"model-{outtype}.gguf"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
