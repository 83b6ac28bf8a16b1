"""`chimera gguf` text output and errors, checked against the gguf package's reading."""

from __future__ import annotations

from pathlib import Path

import gguf

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "gguf" / \
    "tiny_granitehybrid.gguf"


def test_text_output_lists_everything(chimera) -> None:
    out = chimera.run("gguf", FIXTURE).stdout
    reader = gguf.GGUFReader(str(FIXTURE))
    assert "architecture: granitehybrid" in out
    assert "GGUF v3" in out
    hp = out.split("hyper-parameters:")[1].split("metadata")[0]
    assert "block_count" in hp and " 4\n" in hp.split("block_count")[1].split("\n")[0] + "\n"
    assert "[0, 0, 2, 0]" in hp  # head_count_kv per layer
    for f in reader.fields.values():
        if not f.name.startswith("GGUF."):
            assert f"\n  {f.name} " in out, f.name
    # The tokens array (32 strings) is abbreviated to its first few.
    tokens_line = next(l for l in out.splitlines() if l.strip().startswith("tokenizer.ggml.tokens"))
    assert '[32 strings: "<|end_of_text|>", "<|pad|>", "a", "b", "c", ... ]' in tokens_line
    for t in reader.tensors:
        line = next(l for l in out.splitlines() if l.strip().startswith(t.name + " "))
        fields = line.split()
        assert fields[1] == t.tensor_type.name
        shape = "{" + ", ".join(str(int(d)) for d in t.shape) + "}"
        assert shape in line
        assert fields[-1] == str(int(t.n_bytes))
    total_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    params = sum(int(t.n_elements) for t in reader.tensors)
    assert f"totals: {len(reader.tensors)} tensors, {params} parameters, {total_bytes} bytes" in out


def test_missing_file_is_a_clear_error(chimera, tmp_path: Path) -> None:
    proc = chimera.run("gguf", tmp_path / "nope.gguf", check=False)
    assert proc.returncode == 1
    assert "not found" in proc.stderr and "nope.gguf" in proc.stderr
    assert proc.stdout == ""


def test_non_gguf_file_is_a_clear_error(chimera, tmp_path: Path) -> None:
    p = tmp_path / "model.bin"
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    proc = chimera.run("gguf", p, check=False)
    assert proc.returncode == 1
    assert "not a GGUF file" in proc.stderr and "model.bin" in proc.stderr


def test_truncated_file_names_the_field_and_offset(chimera, tmp_path: Path) -> None:
    data = FIXTURE.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[:1000])  # inside the metadata
    proc = chimera.run("gguf", p, "--json", check=False)
    assert proc.returncode == 1
    assert "format error" in proc.stderr and "at byte" in proc.stderr
    assert proc.stdout == ""


def test_usage_errors(chimera) -> None:
    proc = chimera.run("gguf", check=False)
    assert proc.returncode != 0
    assert "FILE" in proc.stderr + proc.stdout
