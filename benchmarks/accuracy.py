"""Accuracy of every planner on SmolLM2-135M: KJV perplexity, achieved sparsity, packed bytes, planning time.

    python benchmarks/accuracy.py [--calibration 48] [--windows 40] [--unseen 16] [--only wanda,sparsegpt] [--out t.md]

Calibration: windows of 512 tokens evenly spaced over the first 80% of the KJV verses. Perplexity: consecutive
512-token windows of the last 20% (never seen while planning), and of text of another kind, the Python standard
library's docstrings (common.stdlib_docs_text), to show whether a plan generalises beyond the calibration text.
Plans are made on the float32 model; each is evaluated on `sparc.reference(model, plan)` (the eager model whose
weights are exactly what the packed layouts hold; the compiled model equals it: tests/test_smollm2.py) cast to
bfloat16, the dtype sparc's kernels serve (on this CPU's AVX512-BF16 about 1.8x faster than float32; dense
perplexity moves by under 0.1%). SmolLM2 here is de-quantized from Q4_1: int4 group-32 is lossless on it, so
int4 rows measure pruning more than quantization.
"""
from __future__ import annotations

import argparse
import time

import torch

import sparc
from sparc.passes.pack_weights import pack_layer

from common import perplexity, smollm2_with_kjv, stdlib_docs_text, token_windows

REFINE_STEPS, REFINE_LR = 40, 0.05  # CPU-sized: 40 steps of one 512-token window (the paper: 2000 x 256 x 4096)

ROWS = [
    ("dense", dict(method="dense")),
    ("magnitude 2:4", dict(method="magnitude", pattern="2:4")),
    ("wanda 2:4", dict(method="wanda", pattern="2:4")),
    ("sparsegpt 2:4", dict(method="sparsegpt", pattern="2:4")),
    *[(f"patch {s:.0%} prior", dict(method="patch", sparsity=s)) for s in (0.25, 0.35, 0.45)],
    (f"patch 35% refined ({REFINE_STEPS} steps)",
     dict(method="patch", sparsity=0.35, refine_steps=REFINE_STEPS, refine_lr=REFINE_LR)),
    *[(f"gqsa w4 g128 {s:.0%} groups", dict(method="gqsa", bits=4, group=128, sparsity=s))
      for s in (0.25, 0.35, 0.45, 0.5)],
    ("cfsp 20% channels", dict(method="cfsp", sparsity=0.2)),
    ("wanda-sp 20% channels", dict(method="wanda-sp", sparsity=0.2)),
    ("magnitude-sp 20% channels", dict(method="magnitude-sp", sparsity=0.2)),
]


def packed_bytes(model, plan) -> tuple[int, int]:
    """(bytes of the planned weights packed for bf16 activations, bytes of the same weights dense in bf16)."""
    params = dict(model.named_parameters())
    packed = sum(pack_layer(name, layer, params[name].detach().to(torch.bfloat16)).nbytes
                 for name, layer in plan.layers.items())
    return packed, sum(2 * params[name].numel() for name in plan.layers)


def evaluate(name, settings, model, calibration, held_out, unseen) -> dict:
    start = time.perf_counter()
    plan = sparc.plan(model, calibration, **settings)
    seconds = time.perf_counter() - start
    weights = sum(layer.mask.numel() for layer in plan.layers.values())
    kept = sum(layer.mask.sum().item() for layer in plan.layers.values())
    packed, dense = packed_bytes(model, plan)
    planned = sparc.reference(model, plan).to(torch.bfloat16)
    return dict(name=name, ppl=perplexity(planned, held_out), unseen=perplexity(planned, unseen),
                sparsity=1 - kept / weights, packed=packed, dense=dense, seconds=seconds)


def table(rows: list[dict], tokens: int, unseen_tokens: int) -> str:
    lines = [f"| plan | KJV ppl ({tokens} held-out tokens) | unseen-text ppl ({unseen_tokens} tokens) | sparsity of "
             "planned weights | packed MB (bf16) | vs dense bf16 | planning s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['ppl']:.2f} | {r['unseen']:.2f} | {r['sparsity']:.1%} | "
                     f"{r['packed'] / 1e6:.1f} | {r['packed'] / r['dense']:.2f}x | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=48, help="calibration windows of 512 tokens")
    parser.add_argument("--windows", type=int, default=40, help="held-out KJV windows of 512 tokens")
    parser.add_argument("--unseen", type=int, default=16, help="windows of 512 tokens of the unseen text")
    parser.add_argument("--only", default="", help="comma-separated substrings of row names to run")
    parser.add_argument("--out", default="", help="also write the table to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    model, tokenizer, calibration, held_out = smollm2_with_kjv((args.calibration, 512), (args.windows, 512))
    unseen = token_windows(tokenizer, stdlib_docs_text(), 512, args.unseen)
    wanted = [part for part in args.only.split(",") if part]
    rows = []
    for name, settings in ROWS:
        if wanted and not any(part in name for part in wanted):
            continue
        rows.append(evaluate(name, settings, model, calibration, held_out, unseen))
        print(f"{name}: ppl {rows[-1]['ppl']:.2f}, unseen {rows[-1]['unseen']:.2f} "
              f"(at {(time.perf_counter() - started) / 60:.1f} min)", flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(table(rows, args.windows * 511, args.unseen * 511) + "\n")
    print(table(rows, args.windows * 511, args.unseen * 511))
    print(f"whole run: {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
