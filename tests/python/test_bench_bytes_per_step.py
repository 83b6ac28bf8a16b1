"""`chimera bench`'s count of the weight bytes one decode step reads (weight_bytes_per_step in
--json, the numerator of its GB/s and % of the streaming read) against an independent sum over
the file's tensors read with the gguf package:

- every tensor once, a tied LM head (no output.weight: the embedding table is the head) included
  once;
- an untied embedding table: one row (the token's);
- MoE expert stacks (`*_exps.*`): n_expert_used / n_expert of them;
- the blocks past block_count - nextn_predict_layers (MTP heads, which decode never reads): none.

Files: tied dense models (gemma3, granitehybrid-dense), untied ones (qwen35, llama), MoE models
(qwen35moe untied, granitehybrid-moe tied), a tied Q8_0 file with a 2-D head, and a qwen35 file
with an MTP block appended as llama.cpp's converter lays it out.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import gguf
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_qwen_mtp import add_mtp_block  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests/fixtures/models"


def expected_bytes(path: Path) -> tuple[int, dict]:
    r = gguf.GGUFReader(str(path))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    arch = f["general.architecture"]
    n_layer = int(f[f"{arch}.block_count"]) - int(f.get(f"{arch}.nextn_predict_layers", 0))
    n_expert = int(f.get(f"{arch}.expert_count", 0))
    n_used = int(f.get(f"{arch}.expert_used_count", 0))
    names = {t.name for t in r.tensors}
    total, skipped = 0, []
    for t in r.tensors:
        m = re.match(r"blk\.(\d+)\.", t.name)
        if m and int(m[1]) >= n_layer:
            skipped.append(t.name)
            continue
        n = int(t.n_bytes)
        if t.name == "token_embd.weight" and "output.weight" in names:
            n //= int(t.shape[1])  # ggml order: shape[1] is the number of rows
        if "_exps." in t.name:
            assert n % n_expert == 0
            n = n // n_expert * n_used
        total += n
    return total, {"tensors": len(r.tensors), "skipped": skipped, "tied": "output.weight" not in names,
                   "experts": n_expert, "file_bytes": path.stat().st_size}


def bench_count(chimera, path: Path) -> int:
    j = chimera.json("bench", "-m", path, "-p", "0", "-n", "1", "-r", "1", "-t", "1", "--json")
    return int(j["weight_bytes_per_step"])


CASES = {"gemma3": (True, False), "granitehybrid-dense": (True, False), "qwen35": (False, False),
         "llama": (False, False), "qwen35moe": (False, True), "granitehybrid-moe": (True, True)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_count_equals_the_tensor_sum(chimera, name):
    path = FIXTURES / name / "model-f32.gguf"
    want, info = expected_bytes(path)
    assert bench_count(chimera, path) == want, info


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_kinds_are_what_the_cases_claim(name):
    info = expected_bytes(FIXTURES / name / "model-f32.gguf")[1]
    assert (info["tied"], info["experts"] > 0) == CASES[name]


def test_quantized_file(chimera, tmp_path):
    f16 = tmp_path / "f16.gguf"
    q8 = tmp_path / "q8.gguf"
    chimera.run("synthetic", "--arch", "qwen35", "--type", "F16", "-o", f16)
    chimera.run("quantize", f16, q8, "Q8_0")
    want, info = expected_bytes(q8)
    assert info["tied"]
    assert bench_count(chimera, q8) == want, info


def test_mtp_block_is_not_counted(chimera, tmp_path):
    plain = FIXTURES / "qwen35" / "model-f32.gguf"
    mtp = tmp_path / "mtp.gguf"
    add_mtp_block(plain, mtp, "qwen35")
    want, info = expected_bytes(mtp)
    assert len(info["skipped"]) > 4  # the MTP block's attention, FFN and nextn.* tensors
    assert want == expected_bytes(plain)[0]
    assert bench_count(chimera, mtp) == want, info
