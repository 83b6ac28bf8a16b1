"""Byte-level BPE vocabularies trained on the King James Bible (Debian's bible-kjv-text), shared by
the test fixtures (python/make_model_fixtures.py) and the default model
(python/train_default_model.py): Granite 4.0-H's pre-tokenizer (the llama3 regex, then bytes to the
GPT-2 alphabet; GGUF pre `dbrx`), its role tokens and a Granite-style chat template."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from chimera_convert.vocab import LLAMA3_REGEX

SPECIAL_TOKENS = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] "
    "+ '<|end_of_text|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}")


def kjv_verses() -> list[str]:
    """Every verse of the KJV in order, verse numbers stripped."""
    try:
        out = subprocess.run(["bible", "-l1000", "gen1:1-rev22:21"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"needs the KJV text: apt-get install bible-kjv-text ({e})")
    verses = []
    for line in out.splitlines():
        parts = line.strip().split(" ", 1)
        if len(parts) == 2 and parts[0].isdigit():
            verses.append(parts[1])
    return verses


def train_tokenizer(lines: list[str], vocab_size: int):
    """A `vocab_size`-entry BPE trained on `lines`; special tokens get ids 0..3."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS[0],
                                     eos_token=SPECIAL_TOKENS[0], pad_token=SPECIAL_TOKENS[3])
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def save_tokenizer(hf_tok, directory: Path, template_in_config: bool = False) -> None:
    """save_pretrained without BOS/EOS added (like Granite 4.0). template_in_config: also put the
    chat template into tokenizer_config.json when transformers wrote it nowhere."""
    hf_tok.save_pretrained(directory)
    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["add_bos_token"] = False
    cfg["add_eos_token"] = False
    if (template_in_config and "chat_template" not in cfg
            and not (directory / "chat_template.jinja").exists()):
        cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
