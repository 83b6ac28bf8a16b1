#!/usr/bin/env python3
"""How far transformers itself moves from a fixture's float32 reference logits when the model's
matrices are rounded to F16 (as model-f16.gguf stores them; norms, routers, conv and gates stay
F32). Prints the three worst positions (NMSE, sequence, position) per model, so an engine's F16
parity misses can be told apart from the model's own sensitivity.

    /work/venv-fix/bin/python python/check_f16_sensitivity.py WORK_DIR [NAME ...]

WORK_DIR is make_model_fixtures.py's --work directory (the HF checkpoints not committed).
Measured on the qwen fixtures (transformers 5.24.0): qwen35 len100 position 80 NMSE 2.69e-4,
qwen35moe len100 position 43 NMSE 0.072 (a top-2 expert flip), qwen3next <= 3.3e-5 -- the
values chimera's F16 GGUFs give as well.
"""

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CLASSES = {"qwen35": "Qwen3_5ForCausalLM", "qwen35moe": "Qwen3_5MoeForCausalLM",
           "qwen3next": "Qwen3NextForCausalLM"}
KEEP_F32 = ("norm", "mlp.gate.weight", "conv1d", "shared_expert_gate")


def main() -> int:
    import torch
    import transformers

    work = Path(sys.argv[1])
    for name in sys.argv[2:] or list(CLASSES):
        fixture = REPO / "tests/fixtures/models" / name
        ref = json.loads((fixture / "reference.json").read_text())
        cls = getattr(transformers, ref["hf_architecture"])
        m = cls.from_pretrained(work / name, dtype=torch.float32).eval()
        with torch.no_grad():
            for n, p in m.named_parameters():
                if p.ndim >= 2 and not any(k in n for k in KEEP_F32):
                    p.copy_(p.half().float())
        worst = []
        for s in ref["sequences"]:
            want = np.fromfile(fixture / s["logits"], dtype="<f4").reshape(s["n_tokens"], -1)
            with torch.no_grad():
                got = m(input_ids=torch.tensor([s["tokens"]]), use_cache=False).logits[0].numpy()
            nmse = ((got - want) ** 2).sum(1) / (want ** 2).sum(1)
            worst.append((float(nmse.max()), s["name"], int(nmse.argmax())))
        print(name, sorted(worst, reverse=True)[:3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
