#!/usr/bin/env python3
"""Convert a Hugging Face checkpoint directory to GGUF, the chimera way (no torch needed).

    python/convert_hf_to_gguf.py HF_DIR -o OUT.gguf [--outtype f32|f16|bf16] [--vocab-pre NAME]

Supported: GraniteMoeHybridForCausalLM (-> granitehybrid; dense FFN or MoE + shared expert),
Mamba2ForCausalLM (-> mamba2), LlamaForCausalLM (-> llama), GraniteForCausalLM (-> granite),
Qwen3NextForCausalLM (-> qwen3next), Qwen3_5ForCausalLM (-> qwen35), Qwen3_5MoeForCausalLM
(-> qwen35moe; the text-only checkpoints, no MTP layers), NemotronHForCausalLM (-> nemotron_h;
Mamba2 / NoPE attention / squared-ReLU MLP layers; -> nemotron_h_moe when it has MoE layers), Lfm2ForCausalLM (-> lfm2) and Lfm2MoeForCausalLM
(-> lfm2moe; short-conv and attention layers, dense leading layers, then sigmoid-routed experts),
FalconH1ForCausalLM (-> falcon-h1; muP multipliers folded into the weights),
Gemma3ForCausalLM (-> gemma3; norms written as 1 + w, sliding-window layers; its SentencePiece
tokenizer.model when present, else a byte-level BPE tokenizer.json).
Reads config.json, *.safetensors (F32/F16/BF16, sharded or not) and a byte-level BPE
tokenizer.json or (Gemma) a SentencePiece tokenizer.model (+ tokenizer_config.json), and writes keys, tensor names, shapes and types the way
llama.cpp's converter does (see /work/shared/spec/ARCHITECTURES.md and python/chimera_convert/), so
the two converters' files are interchangeable. Deviations, each only where llama.cpp's output would
compute something other than transformers: an absent granitehybrid attention_multiplier is written
as 1.0; a granitehybrid config with position_embedding_type "rope" keeps RoPE; a dense granitehybrid
writes feed_forward_length = shared_intermediate_size; ssm_a is -exp(A_log) rounded once from
float64; nemotron_h ignores time_step_min, as llama.cpp and NVIDIA's code do (transformers 5
clamps dt to it in its chunked prefill only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chimera_convert import ConversionError  # noqa: E402
from chimera_convert.archs import PLANNERS  # noqa: E402
from chimera_convert.checkpoint import Checkpoint  # noqa: E402
from chimera_convert.output import OUTTYPES, write_plan  # noqa: E402
from chimera_convert.vocab import make_vocab_writer  # noqa: E402
from chimera_convert.vocab_spm import make_spm_vocab_writer  # noqa: E402


def convert(hf_dir: str | Path, out: str | Path, outtype: str = "f16",
            vocab_pre: str | None = None, model_name: str | None = None) -> None:
    """Converts HF_DIR to OUT; raises ConversionError (nothing written) on bad input."""
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown outtype '{outtype}' (expected f32, f16 or bf16)")
    ckpt = Checkpoint(hf_dir)
    hf_arch = ckpt.architecture()
    planner = PLANNERS.get(hf_arch)
    if planner is None:
        raise ConversionError(f"{ckpt.dir}/config.json: architecture '{hf_arch}' is not supported "
                              f"(supported: {', '.join(sorted(PLANNERS))})")
    plan = planner(ckpt)
    plan.key("add_name", model_name or ckpt.dir.resolve().name)
    n_vocab = next(t.shape[0] for t in plan.tensors if t.name == "token_embd.weight")
    if plan.arch == "gemma3" and (ckpt.dir / "tokenizer.model").is_file():
        # Gemma ships a SentencePiece model; llama.cpp's converter prefers it to tokenizer.json
        if vocab_pre:
            raise ConversionError("--vocab-pre applies to byte-level BPE vocabularies, not to "
                                  f"{ckpt.dir}/tokenizer.model (SentencePiece)")
        vocab_writer = make_spm_vocab_writer(ckpt.dir, n_vocab, add_space_prefix=False)
    else:
        vocab_writer = make_vocab_writer(ckpt.dir, n_vocab, vocab_pre)
    write_plan(plan, out, outtype, vocab_writer)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hf_dir", help="HF checkpoint directory (config.json, *.safetensors, tokenizer)")
    ap.add_argument("-o", "--outfile", required=True, help="output .gguf path")
    ap.add_argument("--outtype", default="f16", choices=sorted(OUTTYPES),
                    help="type of the matrices (norms, routers, conv, ssm_a/d, biases stay f32)")
    ap.add_argument("--model-name", default=None,
                    help="general.name (default: the checkpoint directory's name)")
    ap.add_argument("--vocab-pre", default=None,
                    help="force tokenizer.ggml.pre (default: read off tokenizer.json)")
    args = ap.parse_args(argv)
    try:
        convert(args.hf_dir, args.outfile, args.outtype, args.vocab_pre, args.model_name)
    except ConversionError as e:
        print(f"convert_hf_to_gguf: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the output directory does not exist or is not writable
        print(f"convert_hf_to_gguf: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.outfile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
