#!/usr/bin/env python3
"""Builds the tiny Gemma 3 checkpoint with a SentencePiece tokenizer.model, as real Gemma
checkpoints ship it, for the converter comparison with llama.cpp.

    /work/venv-fix/bin/python python/make_gemma_spm_checkpoint.py
    /work/venv-fix/bin/python python/make_converter_reference.py --llama-cpp ... --only gemma3-spm

Writes tests/fixtures/models/gemma3-spm/hf/:
  config.json, model.safetensors  a random-weight Gemma3ForCausalLM from transformers (seeded),
                                  vocab_size 3008: 8 ids past the 3,000 pieces, as Gemma's 262,208
                                  rows exceed its 262,144 pieces (the converters pad them)
  tokenizer.model                 tests/fixtures/vocab/gemma-spm-test.model, the Gemma-settings
                                  SentencePiece model of python/make_gemma_tokenizer_fixture.py
  tokenizer_config.json           as HF saves Gemma's: add_bos_token true, add_eos_token false,
                                  the special tokens, and added_tokens_decoder listing the
                                  special ids (special), the role markers (special) and the
                                  model's other user-defined pieces (not special)
  chat_template.jinja             Gemma's turn format

tests/python/test_converter_vs_llama_cpp.py compares what both converters write from it, and
tests/python/test_converter_gemma3_spm.py tokenizes with the converted file.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

from make_gemma_tokenizer_fixture import ROLE_MARKERS, USER_DEFINED  # noqa: E402
OUT = REPO / "tests/fixtures/models/gemma3-spm/hf"
SPM = REPO / "tests/fixtures/vocab/gemma-spm-test.model"
VOCAB_SIZE = 3008
SEED = 121
CHAT_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages %}"
    "{{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) "
    "+ '\\n' + message['content'] + '<end_of_turn>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}")


def main() -> int:
    import sentencepiece as spm
    import torch
    import transformers

    sp = spm.SentencePieceProcessor(model_file=str(SPM))
    decoder = {}
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        special = sp.is_control(i) or sp.is_unknown(i) or piece in ROLE_MARKERS
        if special or piece in USER_DEFINED:
            decoder[str(i)] = {"content": piece, "lstrip": False, "normalized": False,
                               "rstrip": False, "single_word": False, "special": bool(special)}
    assert [decoder[k]["content"] for k in ("0", "1", "2", "3")] == \
        ["<pad>", "<eos>", "<bos>", "<unk>"], decoder

    cfg = transformers.Gemma3TextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, intermediate_size=48,
        rms_norm_eps=1e-6, max_position_embeddings=512, sliding_window=8,
        # llama.cpp's own layer pattern (5 local : 1 global), which it writes no key for
        layer_types=["sliding_attention"] * 5 + ["full_attention"], final_logit_softcapping=30.0,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        tie_word_embeddings=True, pad_token_id=sp.pad_id(), eos_token_id=sp.eos_id(),
        bos_token_id=sp.bos_id())
    cfg.architectures = ["Gemma3ForCausalLM"]
    torch.manual_seed(SEED)
    model = transformers.Gemma3ForCausalLM(cfg).float().eval()
    with torch.no_grad():  # norms random too, so the 1 + w fold shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(0.1 * torch.randn(p.shape))
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT)
    shutil.copyfile(SPM, OUT / "tokenizer.model")
    tok_cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>",
               "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
               "tokenizer_class": "GemmaTokenizer", "spaces_between_special_tokens": False,
               "model_max_length": 512, "added_tokens_decoder": decoder}
    (OUT / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False)
                                               + "\n", encoding="utf-8")
    (OUT / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    for f in sorted(OUT.iterdir()):
        print(f"{f.relative_to(REPO)}: {f.stat().st_size} bytes")
    print(f"added_tokens_decoder: {len(decoder)} entries; transformers {transformers.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
