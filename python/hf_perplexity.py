"""Perplexity of an HF checkpoint with llama.cpp's llama-perplexity definition (the one
`chimera perplexity` implements): the text is tokenized without special tokens, cut into
non-overlapping windows of n_ctx tokens (a partial last window is dropped), each window is run
from an empty state, and the logits at positions n_ctx/2 .. n_ctx-2 score the next token
(n_ctx - 1 - n_ctx/2 tokens per window). A BOS, if the tokenizer adds one, replaces the first
token of each window. Needs torch + transformers (python/requirements-fixtures.txt).

    python python/hf_perplexity.py HF_DIR TEXT_FILE [--ctx 256] [--json OUT]
"""
import argparse
import json
import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(a.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(a.hf_dir, torch_dtype=torch.float32).eval()
    ids = tok(open(a.text, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
    n_ctx, first = a.ctx, a.ctx // 2
    n_windows = len(ids) // n_ctx
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in range(n_windows):
            x = torch.tensor([ids[w * n_ctx:(w + 1) * n_ctx]])
            logits = model(x).logits[0].double()
            lp = torch.log_softmax(logits[first:n_ctx - 1], dim=-1)
            tgt = x[0, first + 1:n_ctx]
            nll -= lp.gather(1, tgt[:, None]).sum().item()
            count += n_ctx - 1 - first
    ppl = math.exp(nll / count)
    res = {"perplexity": ppl, "scored_tokens": count, "windows": n_windows, "context_size": n_ctx,
           "tokens": len(ids)}
    print(json.dumps(res, indent=2))
    if a.json:
        json.dump(res, open(a.json, "w"), indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
