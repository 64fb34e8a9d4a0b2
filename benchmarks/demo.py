"""sparc on a real model, on the CPU: plan SmolLM2-135M with Wanda 2:4, compile it, and compare with dense.

    python benchmarks/demo.py [--calibration-batches 16] [--windows 8]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import sparc
from sparc.debug import plan_table

from common import greedy, perplexity, smollm2_with_kjv

PROMPT = "And God said unto Moses,"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration-batches", type=int, default=16, help="calibration windows of 256 tokens")
    parser.add_argument("--windows", type=int, default=8, help="held-out windows of 512 tokens for perplexity")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--plan", default="smollm2-wanda24.json", help="where to save the plan")
    args = parser.parse_args()
    torch.manual_seed(0)

    model, tokenizer, calibration, held_out = smollm2_with_kjv((args.calibration_batches, 256), (args.windows, 512))

    start = time.perf_counter()
    plan = sparc.plan(model, calibration, method="wanda", sparsity=0.5, pattern="2:4")
    print(f"\nplanned in {time.perf_counter() - start:.1f} s\n")
    print(plan_table(plan))
    plan.save(args.plan)
    print(f"\nplan saved to {Path(args.plan).resolve().name} (+ .npz)")

    compiled = torch.compile(model, backend="sparc", options={"plan": sparc.Plan.load(args.plan)}, dynamic=True)
    start = time.perf_counter()
    planned_ppl = perplexity(compiled, held_out)
    print(f"compiled and ran {args.windows} windows in {time.perf_counter() - start:.1f} s")
    dense_ppl = perplexity(model, held_out)
    tokens = args.windows * 511
    print(f"\nperplexity on held-out KJV ({tokens} tokens): dense {dense_ppl:.2f}, wanda 2:4 {planned_ppl:.2f}")

    text, planned_seconds = greedy(compiled, tokenizer, PROMPT, args.new_tokens)
    _, dense_seconds = greedy(model, tokenizer, PROMPT, args.new_tokens)
    print(f"\nsample (wanda 2:4, greedy): {text!r}")
    print(f"time per token (whole-sequence forward, no KV cache): sparc {planned_seconds * 1e3:.0f} ms, "
          f"dense eager {dense_seconds * 1e3:.0f} ms")
    print("on the CPU sparc runs its reference formats; the speed comes from its GPU kernels")


if __name__ == "__main__":
    main()
