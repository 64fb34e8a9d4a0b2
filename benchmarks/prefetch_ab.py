"""A/B of the L2 prefetch distance (`kernels/l2_prefetch.py`) of `hybrid_mma`, with `linear.py`'s operands and
timing (CUDA graphs over >= 4x L2 of weights, median of replays, time per layer).

    python benchmarks/prefetch_ab.py [--shapes 4096x4096,14336x4096] [--cells hybrid30=1,16/hybrid_dense=16]
                                     [--distances 0,2] [--rounds 2]

Each layout packs its weights once; every distance then runs on the same operands, with the tuned config of
each cell and only its `prefetch` field replaced; rounds repeat the whole sweep (spread). Every output is
checked against x @ W.T before it is timed (a miss is marked *). A layout whose kernel has no `prefetch` field
runs as tuned in every column (a control for the spread).
"""
from __future__ import annotations

import argparse
import dataclasses
import math

import torch

import linear

from sparc.kernels import tuning

DISTANCE = [0]
_tuned_config = tuning.config_for


def config_with_distance(*args, **kwargs):
    config = _tuned_config(*args, **kwargs)
    if dataclasses.is_dataclass(config) and "prefetch" in {f.name for f in dataclasses.fields(config)}:
        config = dataclasses.replace(config, prefetch=DISTANCE[0])
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="4096x4096,14336x4096,4096x14336")
    parser.add_argument("--cells", default="hybrid30=1,16,64/hybrid_dense=16,64", help="layout=M,M,.../...")
    parser.add_argument("--distances", default="0,2,5")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--L", type=int, default=8)
    parser.add_argument("--replays", type=int, default=30)
    args = parser.parse_args()
    tuning.config_for = config_with_distance
    distances = [int(d) for d in args.distances.split(",")]
    min_mb = 4 * torch.cuda.get_device_properties(0).L2_cache_size / 2**20
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; us per layer, best of {args.rounds} "
          "rounds (spread in brackets)")
    print("| shape | layout | M | " + " | ".join(f"d={d}" for d in distances) + " |")
    print("|---|---|---|" + "---|" * len(distances))
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        torch.manual_seed(n * 7919 + k)
        weights = [torch.randn(n, k, device="cuda").to(linear.BF16) for _ in range(args.L)]
        for cell in args.cells.split("/"):
            layout, ms = cell.split("=")
            gen = torch.Generator().manual_seed(n * 31 + k)
            operands = [linear.BUILDERS[layout](weights[0], gen)]
            count = min(512, max(args.L, math.ceil(min_mb * 2**20 / operands[0].nbytes)))
            operands += [linear.BUILDERS[layout](weights[i % args.L], gen) for i in range(1, count)]
            reference = operands[0].weight().float()
            for m in (int(v) for v in ms.split(",")):
                x = torch.randn(m, k, device="cuda").to(linear.BF16)
                times, misses = {d: [] for d in distances}, {}
                for _ in range(args.rounds):
                    for d in distances:
                        DISTANCE[0] = d
                        if miss := linear.check(operands[0].run(x), x, reference):
                            misses[d] = f" * {miss}"
                        times[d].append(linear.time_per_layer(operands, x, args.replays, True))
                cells = [f"{min(t):.1f} ({max(t) - min(t):.1f}){misses.get(d, '')}" for d, t in times.items()]
                print(f"| {shape} | {layout} | {m} | " + " | ".join(cells) + " |", flush=True)
            del operands, reference
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
