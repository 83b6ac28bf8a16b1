#!/usr/bin/env python3
"""Trains chimera's embedded default model: a small Granite 4.0-H style hybrid on the KJV Bible.

    .venv/bin/pip install -r python/requirements-fixtures.txt
    nice -n 19 .venv/bin/python python/train_default_model.py --out models

Model: transformers' GraniteMoeHybridForCausalLM, dense FFN (no experts), 6 layers of which 2 are
attention (NoPE, GQA 4/2) and 4 are Mamba2 (8 heads x 64, state 32, 1 group), width 256, Granite
multipliers, tied embeddings; a 2048-entry byte-level BPE (tokenizers package, llama3/dbrx
pre-tokenizer) trained on the training split. Data: the King James Bible from the Debian package
bible-kjv-text (`bible` command), one verse per line; blocks of 200 consecutive verses are held out
when block_index % 20 == 7 (5% of the text, spread over the whole book) for evaluation.

Reproducible: one seed fixes the tokenizer, the initial weights and the batch order; one CPU
thread (torch.set_num_threads(1), deterministic algorithms), a fixed number of steps. A wall-clock
guard (--max-minutes) ends training early if the machine is slower than expected; the log says so.

--draft --distill-from models/default.gguf trains the speculative-decoding draft on the target's
own next-token distributions and generations (computed by a built chimera, see teacher_data), so
that its greedy predictions agree with the target's (models/README.md has the command).

Writes to --out: train_log.txt (config, per-step loss, held-out perplexity), default.gguf (F16,
converted with chimera's converter), heldout.txt (the held-out text, for `chimera perplexity`).
The HF checkpoint + tokenizer go to --hf-dir (default build-default-model/hf/, not committed).

Held-out perplexity follows llama.cpp's llama-perplexity: the tokenized text is cut into
non-overlapping windows of n_ctx tokens; each window is evaluated from an empty state and only the
second half of its tokens (positions n_ctx/2 .. n_ctx-1) is scored; ppl = exp(mean NLL).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

from chimera_convert.bpe_training import (  # noqa: E402
    kjv_verses, save_tokenizer, train_tokenizer)

VOCAB = 2048
MODEL_CONFIG = dict(
    vocab_size=VOCAB, hidden_size=256, num_hidden_layers=6,
    layer_types=["mamba", "mamba", "attention", "mamba", "mamba", "attention"],
    num_attention_heads=4, num_key_value_heads=2, intermediate_size=512,
    shared_intermediate_size=512, num_local_experts=0, num_experts_per_tok=0,
    mamba_n_heads=8, mamba_d_head=64, mamba_d_state=32, mamba_n_groups=1, mamba_d_conv=4,
    mamba_expand=2, mamba_chunk_size=64, rms_norm_eps=1e-5, max_position_embeddings=4096,
    position_embedding_type="nope", embedding_multiplier=12.0, residual_multiplier=0.25,
    attention_multiplier=1 / 64, logits_scaling=1.0, tie_word_embeddings=True,
    initializer_range=0.02, bos_token_id=0, eos_token_id=0, pad_token_id=3)

# --draft: a speculative-decoding draft model for the default one (issue 12), about a fifth of
# its width (48 vs 256) and a third of its depth (one Mamba2 and one attention layer), same
# tokenizer (trained identically), so `chimera run --draft models/draft.gguf` accepts it.
DRAFT_CONFIG = dict(
    MODEL_CONFIG, hidden_size=48, num_hidden_layers=2, layer_types=["mamba", "attention"],
    intermediate_size=96, shared_intermediate_size=96, mamba_n_heads=4, mamba_d_head=24,
    mamba_d_state=16, attention_multiplier=1 / 12)


def kjv_split() -> tuple[list[str], list[str]]:
    verses = kjv_verses()
    train, held = [], []
    for i in range(0, len(verses), 200):
        (held if (i // 200) % 20 == 7 else train).extend(verses[i:i + 200])
    return train, held


def encode(hf_tok, lines: list[str]) -> list[int]:
    ids: list[int] = []
    for chunk in range(0, len(lines), 2000):
        text = "".join(line + "\n" for line in lines[chunk:chunk + 2000])
        ids += hf_tok(text, add_special_tokens=False)["input_ids"]
    return ids


def perplexity(model, ids, n_ctx: int) -> tuple[float, int, int]:
    """Non-overlapping windows of n_ctx, tokens n_ctx/2 .. n_ctx-1 of each scored (n_ctx/2 per
    window). llama-perplexity (and `chimera perplexity`) score one token less per window, so their
    figure differs (46.25 vs 46.18 for the default model). Returns (ppl, scored tokens, windows)."""
    import torch

    nll, count, windows = 0.0, 0, 0
    first = n_ctx // 2
    with torch.no_grad():
        for start in range(0, len(ids) - n_ctx + 1, n_ctx):
            x = torch.tensor([ids[start:start + n_ctx]])
            logits = model(input_ids=x, use_cache=False).logits[0].double()
            logp = torch.log_softmax(logits[first - 1:n_ctx - 1], dim=-1)
            tgt = x[0, first:n_ctx]
            nll -= float(logp.gather(1, tgt[:, None]).sum())
            count += n_ctx - first
            windows += 1
    return math.exp(nll / count), count, windows


def teacher_topk(chimera: str, teacher: str, ids, k: int, tmp: Path):
    """The teacher's next-token distribution at every position of ids, from `chimera logits
    --all` (one thread): the k most likely tokens (int16) and their probabilities renormalised
    over those k (float32), each (len(ids), k); row i predicts token i+1."""
    import subprocess
    import numpy as np

    subprocess.run([chimera, "logits", "-m", teacher, "-t", "1", "-q", "--all", "--tokens",
                    ",".join(str(int(t)) for t in ids), "-o", str(tmp)], check=True,
                   capture_output=True)
    logits = np.fromfile(tmp, dtype=np.float32).reshape(len(ids), VOCAB)
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    val = np.take_along_axis(logits, top, axis=1).astype(np.float64)
    p = np.exp(val - val.max(axis=1, keepdims=True))
    return top.astype(np.int16), (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def teacher_data(args, hf_tok, train_ids, train_lines, log):
    """Distillation data from the target model (issue 12: a draft that predicts what the target
    says, not only the corpus): two streams of (tokens, teacher top-k ids, top-k probabilities).
    corpus: --distill-chunks seeded chunks of 1024 training tokens, scored by the teacher.
    gen: the teacher's own text (`chimera run`, one thread), greedy and sampled (temperature 0.8,
    top-k 40, top-p 0.95, seed = prompt index) from --distill-prompts prompts (the first 2..6
    words of seeded training verses), --distill-gen tokens each, re-tokenised and scored."""
    import subprocess
    import numpy as np

    rng = np.random.default_rng(args.seed + 1)
    tmp = Path(args.hf_dir) / "teacher_logits.bin"
    t0 = time.time()

    def stream(seqs):
        tok, ids, prob = [], [], []
        for s in seqs:
            i, p = teacher_topk(args.chimera, args.distill_from, s, args.distill_k, tmp)
            tok.append(np.asarray(s, dtype=np.int64))
            ids.append(i)
            prob.append(p)
        return np.concatenate(tok), np.concatenate(ids), np.concatenate(prob)

    L = 1024
    starts = np.sort(rng.choice(len(train_ids) // L, size=args.distill_chunks, replace=False))
    corpus = stream(train_ids[s * L:(s + 1) * L] for s in starts)
    log(f"distill corpus: {len(corpus[0])} training tokens scored by the teacher, "
        f"{time.time() - t0:.0f}s")
    seqs = []
    for i in range(args.distill_prompts):
        words = train_lines[int(rng.integers(len(train_lines)))].split()
        prompt = " ".join(words[:int(rng.integers(2, 7))])
        for temp in ("0", "0.8"):
            text = subprocess.run(
                [args.chimera, "run", "-m", args.distill_from, "-t", "1", "-q", "-n",
                 str(args.distill_gen), "--temp", temp, "--top-k", "40", "--top-p", "0.95",
                 "-s", str(i), "--ignore-eos", "-p", prompt],
                check=True, capture_output=True, text=True).stdout
            seqs.append(hf_tok(text, add_special_tokens=False)["input_ids"])
    gen = stream(seqs)
    log(f"distill gen: {len(seqs)} teacher generations ({args.distill_prompts} prompts, greedy "
        f"and sampled), {len(gen[0])} tokens, {time.time() - t0:.0f}s in all")
    return corpus, gen


def main() -> int:
    ap = argparse.ArgumentParser(description="train the default model")
    ap.add_argument("--out", default=str(REPO / "models"))
    ap.add_argument("--hf-dir", default=str(REPO / "build-default-model" / "hf"),
                    help="where the HF checkpoint + tokenizer are written (not committed)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-minutes", type=float, default=75.0)
    ap.add_argument("--ppl-ctx", type=int, default=256)
    ap.add_argument("--bench", type=int, default=0, help="only time this many steps")
    ap.add_argument("--draft", action="store_true",
                    help="train the small draft model (DRAFT_CONFIG) into OUT/draft.gguf")
    ap.add_argument("--distill-from", default="",
                    help="teacher GGUF (models/default.gguf): distil its next-token "
                         "distributions and its own generations into the model")
    ap.add_argument("--chimera", default=str(REPO / "build" / "bin" / "chimera"),
                    help="chimera binary that computes the teacher's logits and text")
    ap.add_argument("--distill-alpha", type=float, default=0.8,
                    help="weight of the teacher loss; 1 - alpha weights the next-token CE")
    ap.add_argument("--distill-k", type=int, default=32, help="teacher tokens kept per position")
    ap.add_argument("--distill-chunks", type=int, default=512,
                    help="1024-token training chunks scored by the teacher")
    ap.add_argument("--distill-prompts", type=int, default=256)
    ap.add_argument("--distill-gen", type=int, default=256, help="tokens per teacher generation")
    ap.add_argument("--distill-gen-frac", type=float, default=0.5,
                    help="share of each batch drawn from the teacher's generations")
    args = ap.parse_args()
    cfg_dict = DRAFT_CONFIG if args.draft else MODEL_CONFIG
    name = "draft" if args.draft else "default"

    import numpy as np
    import torch
    import transformers
    from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hf_dir = Path(args.hf_dir)
    hf_dir.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_lines.append(msg)

    train_lines, held_lines = kjv_split()
    hf_tok = train_tokenizer(train_lines, VOCAB)
    train_ids = np.array(encode(hf_tok, train_lines), dtype=np.int64)
    held_ids = encode(hf_tok, held_lines)
    log(f"# chimera {name} model, trained by python/train_default_model.py"
        + (" --draft" if args.draft else ""))
    log(f"seed {args.seed}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"1 CPU thread")
    log(f"data: KJV (bible-kjv-text), {len(train_lines)} train verses = {len(train_ids)} tokens, "
        f"{len(held_lines)} held-out verses = {len(held_ids)} tokens; BPE vocab {VOCAB}")

    config = GraniteMoeHybridConfig(**cfg_dict)
    config.architectures = ["GraniteMoeHybridForCausalLM"]
    model = GraniteMoeHybridForCausalLM(config).float()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {json.dumps(cfg_dict)}")
    log(f"parameters: {n_params}")
    log(f"training: steps {args.steps}, batch {args.batch} x {args.seq} tokens, AdamW lr "
        f"{args.lr} (warmup 30, cosine to 10%), wd 0.1, grad clip 1.0")

    teacher = None
    if args.distill_from:
        log(f"distillation: teacher {Path(args.distill_from).name} via {Path(args.chimera).name} "
            f"logits/run (1 thread); loss (1 - {args.distill_alpha}) * next-token CE + "
            f"{args.distill_alpha} * CE against the teacher's top-{args.distill_k} (renormalised); "
            f"batch share of teacher generations {args.distill_gen_frac}")
        teacher = teacher_data(args, hf_tok, train_ids, train_lines, log)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    gen = np.random.default_rng(args.seed)
    steps = args.bench or args.steps
    t0 = time.time()
    model.train()
    done = 0
    for step in range(steps):
        lr_scale = min(1.0, (step + 1) / 30) * (
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, args.steps))))
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_scale
        if teacher:
            # windows from both teacher streams; rows of the top-k arrays predict the next token
            n_gen = round(args.batch * args.distill_gen_frac)
            rows = []
            for (tok, tid, tp), n in ((teacher[0], args.batch - n_gen), (teacher[1], n_gen)):
                for s in gen.integers(0, len(tok) - args.seq - 1, size=n):
                    rows.append((tok[s:s + args.seq + 1], tid[s:s + args.seq], tp[s:s + args.seq]))
            x = torch.from_numpy(np.stack([r[0] for r in rows]))
            t_ids = torch.from_numpy(np.stack([r[1] for r in rows]).astype(np.int64))
            t_p = torch.from_numpy(np.stack([r[2] for r in rows]))
        else:
            starts = gen.integers(0, len(train_ids) - args.seq - 1, size=args.batch)
            x = torch.from_numpy(np.stack([train_ids[s:s + args.seq + 1] for s in starts]))
        logits = model(input_ids=x[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        if teacher:
            # cross-entropy against the teacher's top-k distribution (= KL up to a constant)
            logp = torch.log_softmax(logits, dim=-1).gather(2, t_ids)
            soft = -(t_p * logp).sum(-1).mean()
            loss = (1 - args.distill_alpha) * loss + args.distill_alpha * soft
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        elapsed = time.time() - t0
        if step % 10 == 0 or step == steps - 1:
            log(f"step {step:4d}  loss {loss.item():.4f}  lr {args.lr * lr_scale:.2e}  "
                f"{elapsed:7.1f}s")
        if elapsed > args.max_minutes * 60:
            log(f"stopped by the wall-clock guard after {done} of {steps} steps")
            break
    if args.bench:
        print(f"{(time.time() - t0) / done:.2f} s/step")
        return 0

    model.eval()
    ppl, n_scored, n_windows = perplexity(model, held_ids, args.ppl_ctx)
    log(f"held-out perplexity (n_ctx {args.ppl_ctx}, {n_windows} windows, "
        f"{args.ppl_ctx - args.ppl_ctx // 2} tokens scored per window = {n_scored}; not "
        f"llama-perplexity's definition, which scores one less): {ppl:.4f}")
    prompt = hf_tok("And God said", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        g = model.generate(torch.tensor([prompt]), max_new_tokens=48, do_sample=False,
                           use_cache=True, eos_token_id=None, pad_token_id=3)
    log("greedy sample: " + json.dumps(hf_tok.decode(g[0].tolist())))

    model.save_pretrained(hf_dir)
    save_tokenizer(hf_tok, hf_dir)
    if not args.draft:
        (out / "heldout.txt").write_text("".join(line + "\n" for line in held_lines))
    from convert_hf_to_gguf import convert
    gguf = out / f"{name}.gguf"
    convert(hf_dir, gguf, "f16", model_name=f"chimera-{name}-kjv")
    log(f"wrote {gguf} ({gguf.stat().st_size} bytes, F16)")
    (out / ("draft_train_log.txt" if args.draft else "train_log.txt")).write_text(
        "\n".join(log_lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
