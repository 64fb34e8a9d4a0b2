"""Compile every launch config the tuner will time, in parallel processes, before a tuning run:

    python benchmarks/compile_candidates.py --shapes 4096x4096,14336x4096 --m 64,256 --layouts nv24,hybrid30
                                            [--jobs 12]
    SPARC_AUTOTUNE=1 python benchmarks/linear.py --shapes 4096x4096,14336x4096 --m 64,256 --layouts ...
    TRITON_INTERPRET=1 python benchmarks/compile_candidates.py --smoke      # CPU: tiny shapes, in this process

Tuning compiles each candidate on first use, one at a time: a few seconds each for the warp-specialized
kernels, most of a tuning run. Here each job (layout, shape, M) builds the layout's weight as
benchmarks/linear.py does and runs every config the tuner weighs for that product once, so that Triton's cache
holds each kernel (split-K and the grid follow the shape and M, so the jobs take the tuning run's own); jobs run
in --jobs processes. The run lists the configs that failed to compile or run (the tuner skips them too).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
import sys
import time

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined

import torch
from tqdm import tqdm

import linear
from sparc.kernels import tuning


def compile_job(job) -> tuple[str, int, list[str]]:
    """(what the job was, how many configs it ran, the failures) for job (layout, (N, K), M, device)."""
    name, (n, k), m, device = job
    packed = linear.BUILDERS[name](torch.randn(n, k, device=device).to(linear.BF16), torch.Generator()).packed
    x = torch.randn(m, k, device=device).to(linear.BF16)
    kernel, matmul = tuning.kernel_for(packed.layout, x, packed.tensors)
    configs = [tuning.default(kernel, packed.layout, m), *tuning.product_candidates(kernel, packed.layout, x,
                                                                                    packed.tensors)]
    failed = []
    for config in configs:
        try:
            tuning.runner(matmul, config)(x, packed.layout, packed.tensors, packed.dims, None, config)
        except Exception as e:
            failed.append(f"{config}: {linear.failure(e)}")
    if device == "cuda":
        torch.cuda.synchronize()
    return f"{name} {n}x{k} M={m} ({kernel})", len(configs), failed


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in linear.SHAPES), help="NxK,NxK,...")
    parser.add_argument("--m", default="16,64,256", help="batch rows M, comma separated (the tuning run's)")
    parser.add_argument("--layouts", default=",".join(linear.SPARC), help=f"subset of {','.join(linear.SPARC)}")
    parser.add_argument("--jobs", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)),
                        help="processes compiling at once")
    parser.add_argument("--smoke", action="store_true", help="CPU check: tiny shapes, M 3, in this process")
    args = parser.parse_args()
    args.shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    args.m = [int(v) for v in args.m.split(",")]
    args.layouts = args.layouts.split(",")
    if unknown := set(args.layouts) - set(linear.SPARC):
        parser.error(f"unknown layouts {sorted(unknown)}; sparc's: {','.join(linear.SPARC)}")
    if args.smoke:
        args.shapes, args.m, args.jobs = linear.SMOKE_SHAPES[:1], [3], 1
    return args


def main():
    args = parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device (on the CPU: TRITON_INTERPRET=1 ... --smoke)")
    jobs = [(name, shape, m, device) for name, shape, m in itertools.product(args.layouts, args.shapes, args.m)]
    began, failures = time.perf_counter(), 0
    pool = multiprocessing.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else contextlib.nullcontext()
    with pool:
        done = pool.imap_unordered(compile_job, jobs) if args.jobs > 1 else map(compile_job, jobs)
        for what, ran, failed in tqdm(done, total=len(jobs), desc="jobs"):
            failures += len(failed)
            tqdm.write(f"{what}: {ran} configs" + "".join(f"\n    failed: {line}" for line in failed))
    print(f"{len(jobs)} jobs in {time.perf_counter() - began:.0f} s, {failures} configs failed", flush=True)


if __name__ == "__main__":
    main()
