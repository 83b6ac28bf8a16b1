#!/usr/bin/env python3
"""Records what llama.cpp's converter writes for each committed tiny HF checkpoint, so CI can
check that python/convert_hf_to_gguf.py writes the same files without torch or llama.cpp.

    /work/venv-fix/bin/python python/make_converter_reference.py \\
        --llama-cpp /path/to/llama.cpp [--only NAME ...]

For every fixture directory tests/fixtures/models/NAME that has an HF checkpoint in hf/, it runs
llama.cpp's convert_hf_to_gguf.py (a llama.cpp source tree you provide, with its own gguf-py; it
needs torch) with --outtype f32 and f16, and writes tests/fixtures/models/NAME/llama-cpp-convert.json:

  {"format": 1, "llama_cpp": "<how it was run>", "outputs": {
     "f32": {"metadata": {key: value, ...},
             "tensors": [{"name", "type", "shape" (ggml order), "sha256" (of the data bytes)}]},
     "f16": {...}},
   "excluded_metadata": {key: reason}}

Nothing of llama.cpp is copied: the script runs it and keeps only the facts above.
tests/python/test_converter_vs_llama_cpp.py converts the same checkpoints with chimera's converter
and compares. To add a fixture, commit its hf/ directory (python/make_model_fixtures.py writes it
for the names in its CI_CHECKPOINTS) and rerun this script with --only NAME.

Two things llama.cpp's converter cannot do on these fixtures are patched in at run time, without
changing what it writes for the tensors or the other keys:
  * it identifies a BPE pre-tokenizer by hashing its output on a fixed text against a table of
    known tokenizers; the fixtures' tiny KJV tokenizer is in no table, so get_vocab_base_pre is
    made to answer the name of the regex the fixtures do use (llama3's, without ignore_merges:
    `dbrx`); tokenizer.ggml.pre is therefore excluded from the comparison (chimera reads the
    regex off tokenizer.json, tested in test_converter_qwen.py / test_converter.py);
  * its Granite-4.0-H and Nemotron-H classes read config.json as the models' own hub files spell
    it, not as transformers 5 saves it: GraniteMoeHybrid's layer_types must say "mamba" /
    "attention" (transformers 5 writes "linear_attention" / "full_attention", which llama.cpp
    reads as "no attention layer": head_count_kv all zero); NemotronH's layer kinds must be the
    hybrid_override_pattern string (transformers 5 writes a layers_block_type list, whose "mlp"
    entries llama.cpp does not count as FFN layers: feed_forward_length all zero); a NemotronH config with
    num_experts_per_tok is taken for the MoE model (transformers 5 always writes the MoE
    defaults, so the dense fixture would become nemotron_h_moe; and llama.cpp reads config.json
    through AutoConfig, which adds the same defaults back, so for nemotron_h (RAW_CONFIG) its
    config loader is made to read config.json itself, its own fallback path). CONFIG_OVERRIDES
    below gives those fixtures the hub spelling; both converters are run on that same edited checkpoint
    (the test applies the overrides too), so the comparison stays like for like;
  * for Qwen3-Next / Qwen3.5 it expects multi-token-prediction tensors unless told --no-mtp; the
    fixtures have none, so those runs pass --no-mtp (it then writes no nextn key, as for a
    checkpoint without MTP).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests/fixtures/models"

# Metadata keys whose values legitimately differ between two converters, with the reason. Every
# other key must be present in both files with the same value.
EXCLUDED_METADATA = {
    "general.name": "provenance: llama.cpp derives it from the directory name, chimera from "
                    "--name / the directory (both free text)",
    "general.basename": "provenance: llama.cpp's guess from the directory name; chimera omits it",
    "general.size_label": "provenance: llama.cpp's rounded parameter count label; chimera omits it",
    "general.finetune": "provenance: llama.cpp's guess from the directory name",
    "general.version": "provenance: llama.cpp's guess from the directory name",
    "general.quantization_version": "llama.cpp's writer stamps its ggml quantization version; "
                                    "no tensor here is quantized",
    "general.file_type": "llama.cpp writes it; chimera's runtime derives types from the tensors",
    "tokenizer.ggml.pre": "patched into llama.cpp's run (see the module docstring); chimera's "
                          "choice is read off tokenizer.json and tested separately",
}

# Per fixture: config.json keys to set (value) or drop (None) before both converters run; recorded
# in the JSON so that the test edits the checkpoint the same way. Why: see the module docstring.
CONFIG_OVERRIDES = {
    "granitehybrid-moe": {"layer_types": ["mamba", "mamba", "attention", "mamba"]},
    "nemotron_h": {"layers_block_type": None, "hybrid_override_pattern": "M*-M-*M-",
                   "num_hidden_layers": 8,
                   "mtp_layers_block_type": None, "num_experts_per_tok": None, "n_routed_experts": None,
                   "n_shared_experts": None, "moe_intermediate_size": None,
                   "moe_shared_expert_intermediate_size": None, "n_group": None,
                   "topk_group": None, "norm_topk_prob": None, "routed_scaling_factor": None,
                   "moe_latent_size": None, "moe_shared_expert_overlap": None},
}

# Fixtures whose config llama.cpp must read from config.json itself rather than through
# transformers' AutoConfig, which fills in the config class's defaults: NemotronHConfig's include
# num_experts_per_tok, which makes llama.cpp's converter write any NemotronH as nemotron_h_moe.
# (llama.cpp falls back to reading config.json when AutoConfig fails; the patch takes that path.)
RAW_CONFIG = {"nemotron_h"}


def checkpoint_copy(hf: Path, dest: Path, overrides: dict) -> Path:
    """A copy of the checkpoint with config.json edited (links for the other files)."""
    dest.mkdir()
    for f in hf.iterdir():
        if f.name != "config.json":
            (dest / f.name).symlink_to(f.resolve())
    cfg = json.loads((hf / "config.json").read_text())
    for key, value in overrides.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    return dest


# Run inside llama.cpp's tree: patch the pre-tokenizer lookup, then run its converter as __main__.
BOOTSTRAP = r"""
import runpy, sys
root = sys.argv.pop(1)
pre = sys.argv.pop(1)
raw_config = sys.argv.pop(1)
sys.path[:0] = [root, root + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
if raw_config == "1":  # llama.cpp's own fallback: config.json as is, no transformers defaults
    import json
    base.ModelBase.load_hparams = staticmethod(
        lambda dir_model, is_mistral_format: json.loads((dir_model / "config.json").read_text()))
sys.argv[0] = root + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def jsonable(value):
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def describe(path: Path) -> dict:
    """Every metadata key/value (except the GGUF header bookkeeping) and every tensor's name,
    type, ggml shape and the sha256 of its data bytes."""
    import gguf

    r = gguf.GGUFReader(str(path))
    meta = {}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue  # version, tensor_count, kv_count: the reader's view of the header
        meta[key] = jsonable(field.contents())
    tensors = []
    for t in r.tensors:
        data = np.ascontiguousarray(t.data)
        tensors.append({"name": t.name, "type": t.tensor_type.name,
                        "shape": [int(d) for d in t.shape],
                        "sha256": hashlib.sha256(data.tobytes()).hexdigest()})
    return {"metadata": meta, "tensors": tensors}


def run_llama_cpp(llama: Path, hf: Path, out: Path, outtype: str, arch_class: str,
                  pre: str, raw_config: bool) -> None:
    cmd = [sys.executable, "-c", BOOTSTRAP, str(llama), pre, "1" if raw_config else "0", str(hf),
           "--outtype", outtype, "--outfile", str(out)]
    if arch_class.startswith(("Qwen3Next", "Qwen3_5")):
        cmd.append("--no-mtp")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"llama.cpp's converter failed on {hf}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", required=True, type=Path,
                    help="llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--pre", default="dbrx",
                    help="the llama.cpp pre-tokenizer name of the fixtures' regex (llama3 regex, "
                         "no ignore_merges)")
    args = ap.parse_args()
    llama = args.llama_cpp.resolve()
    rev = subprocess.run(["git", "-C", str(llama), "describe", "--always", "--tags"],
                         capture_output=True, text=True).stdout.strip()
    for hf in sorted(FIXTURES.glob("*/hf")):
        name = hf.parent.name
        if args.only and name not in args.only:
            continue
        arch_class = json.loads((hf / "config.json").read_text())["architectures"][0]
        doc = {"format": 1, "llama_cpp": f"{llama.name} {rev}".strip() + " convert_hf_to_gguf.py",
               "hf_architecture": arch_class, "outputs": {},
               "config_overrides": CONFIG_OVERRIDES.get(name, {}),
               "excluded_metadata": EXCLUDED_METADATA}
        with tempfile.TemporaryDirectory() as tmp:
            if doc["config_overrides"]:
                hf = checkpoint_copy(hf, Path(tmp) / "hf", doc["config_overrides"])
            for outtype in ("f32", "f16"):
                out = Path(tmp) / f"{outtype}.gguf"
                run_llama_cpp(llama, hf, out, outtype, arch_class, args.pre,
                              name in RAW_CONFIG)
                d = describe(out)
                d["metadata"] = {k: v for k, v in d["metadata"].items()
                                 if k not in EXCLUDED_METADATA}
                doc["outputs"][outtype] = d
        dest = FIXTURES / name / "llama-cpp-convert.json"
        dest.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
        n = len(doc["outputs"]["f32"]["tensors"])
        print(f"[{name}] {arch_class}: {n} tensors -> {dest.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
