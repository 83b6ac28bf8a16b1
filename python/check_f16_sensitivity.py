#!/usr/bin/env python3
"""Reference logits for the F16-weight files: transformers running a fixture's checkpoint with
its matrices rounded to F16 exactly as model-f16.gguf stores them (norms, the MoE router, the
conv and the shared-expert gate stay F32, as the converter keeps them; the rest is rounded once,
float32 -> float16 -> float32).

    /work/venv-fix/bin/python python/check_f16_sensitivity.py [--write] [NAME ...]

For each fixture (default: the gated-DeltaNet ones, whose HF checkpoints are committed in hf/)
it prints the three worst positions (NMSE, sequence, position) of that F16-rounded model against
the fixture's float32 reference: how far the model itself moves when its weights are rounded.
qwen35 moves 2.7e-4 (len100 position 80) and qwen35moe 0.072 (len100 position 43: the rounding
flips one of the top-2 experts), above the 1e-4 an engine is held to against the float32
reference, so the engine's F16 parity (tests/runtime/parity_test.cpp) compares with these logits
instead: what a correct engine computes from the very weights in the file.

With --write it stores them next to the fixture: logits-<seq>.f16w.f32 (same layout as
logits-<seq>.f32) and reference-f16w.json ({"sequences": {name: file}, "kept_f32": [...],
"versions": {...}}).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT = ["qwen35", "qwen35moe", "qwen3next"]
# HF parameter name parts the converter keeps F32 in model-f16.gguf (1-D tensors always are)
# (LFM2: the short-conv weight and the MoE router; its expert_bias is a buffer, kept as is)
KEEP_F32 = ("norm", "mlp.gate.weight", "conv1d", "shared_expert_gate", "conv.conv.weight",
            "feed_forward.gate.weight")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true")
    ap.add_argument("names", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    import torch
    import transformers

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for name in args.names:
        fixture = REPO / "tests/fixtures/models" / name
        ref = json.loads((fixture / "reference.json").read_text())
        cls = getattr(transformers, ref["hf_architecture"])
        m = cls.from_pretrained(fixture / "hf", dtype=torch.float32,
                                attn_implementation="eager").eval()
        kept = []
        with torch.no_grad():
            for n, p in m.named_parameters():
                if p.ndim >= 2 and not any(k in n for k in KEEP_F32):
                    p.copy_(p.half().float())
                else:
                    kept.append(n)
        worst, files = [], {}
        for s in ref["sequences"]:
            want = np.fromfile(fixture / s["logits"], dtype="<f4").reshape(s["n_tokens"], -1)
            with torch.no_grad():
                got = m(input_ids=torch.tensor([s["tokens"]]), use_cache=False).logits[0].numpy()
            nmse = ((got - want) ** 2).sum(1) / (want ** 2).sum(1)
            worst.append((float(nmse.max()), s["name"], int(nmse.argmax())))
            if args.write:
                files[s["name"]] = f"logits-{s['name']}.f16w.f32"
                got.astype("<f4").tofile(fixture / files[s["name"]])
        print(name, sorted(worst, reverse=True)[:3])
        if args.write:
            doc = {"format": 1, "sequences": files, "kept_f32": kept,
                   "notes": "transformers with the matrices rounded to F16 as model-f16.gguf "
                            "stores them; made by python/check_f16_sensitivity.py --write",
                   "versions": {"torch": torch.__version__,
                                "transformers": transformers.__version__,
                                "attn_implementation": "eager", "dtype": "float32"}}
            (fixture / "reference-f16w.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
