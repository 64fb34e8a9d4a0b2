"""Decode (M = 1) on shapes without a tuned configuration: each layout's default launch with one split-K slice
against the same launch split to fill the GPU (`decode.fill_split`), next to cuBLAS bf16. Shapes: Llama-3-8B's
1024 x 4096 projections, one that is not a multiple of 128, and SmolLM2-135M's layers.

    python benchmarks/decode_fill.py [--shapes 1024x4096,576x576] [--out decode_fill.md]

Weights, formats, the output check and the timing are those of `benchmarks/linear.py`: enough copies of L
distinct weights to stream 200 MiB per CUDA graph, median of the replays, time per layer."""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import linear  # noqa: E402  (also makes the repository importable as `sparc`)
from sparc.kernels import decode, tiling  # noqa: E402

kernels = linear.kernels

SHAPES = "1024x4096,5000x3000,576x576,192x576,1536x576,576x1536"
LAYOUTS = ["int4", "nv24", "nv24_int4", "hybrid30", "hybrid_dense"]
MIN_BYTES = 200 * 2**20


def operands_for(name: str, weights) -> list:
    gen = torch.Generator().manual_seed(0)
    first = linear.BUILDERS[name](weights[0], gen)
    count = max(len(weights), math.ceil(MIN_BYTES / first.nbytes))
    return [first] + [linear.BUILDERS[name](weights[i % len(weights)], gen) for i in range(1, count)]


def with_config(operands, config) -> list:
    def run(packed):
        return lambda x: kernels.triton_matmul(x, packed.layout, packed.tensors, packed.dims, None, config=config)
    return [dataclasses.replace(op, run=run(op.packed)) for op in operands]


def row(shape: str, replays: int) -> str:
    n, k = map(int, shape.split("x"))
    torch.manual_seed(n * 7919 + k)
    weights = [torch.randn(n, k, device="cuda").to(torch.bfloat16) for _ in range(8)]
    x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    cublas = linear.time_per_layer(operands_for("cublas", weights), x, replays, True)
    cells = [shape, f"{cublas:.1f}"]
    for name in LAYOUTS:
        operands = operands_for(name, weights)
        default = decode.DEFAULTS[operands[0].packed.layout]
        times = []
        for config in (dataclasses.replace(default, split_k=1), dataclasses.replace(default, split_k=0)):
            chosen = with_config(operands, config)
            note = linear.check(chosen[0].run(x), x, operands[0].weight().float())
            if note:
                raise AssertionError(f"{shape} {name} {config}: {note}")
            times.append(linear.time_per_layer(chosen, x, replays, True))
        packed = operands[0].packed
        filled = decode.split_for(packed.layout, packed.dims, dataclasses.replace(default, split_k=0), x.device)
        cells.append(f"{times[0]:.1f} ({cublas / times[0]:.2f}x) / {times[1]:.1f} ({cublas / times[1]:.2f}x), {filled}")
        del operands
        torch.cuda.empty_cache()
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=SHAPES)
    parser.add_argument("--replays", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sms = tiling.sm_count(0)
    lines = [f"Device: {torch.cuda.get_device_name()} ({sms} SMs), torch {torch.__version__}, triton "
             f"{linear.triton.__version__}. M = 1, us per layer (speedup vs cuBLAS bf16): one slice / filled, "
             "and the filled split's slices.", "",
             "| N x K | cuBLAS bf16 | " + " | ".join(f"sparc {name}" for name in LAYOUTS) + " |",
             "|---" * (2 + len(LAYOUTS)) + "|"]
    print("\n".join(lines), flush=True)
    for shape in args.shapes.split(","):
        lines.append(row(shape, args.replays))
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
