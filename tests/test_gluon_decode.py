"""The explicit-layout decode kernels (`kernels.gluon_decode`): the layouts and kernels the host picks, and the
sm_90 code of each kernel, compiled on the CPU (no GPU needed; their results are checked on the GPU by
test_kernels)."""
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparc.kernels import decode, gluon_decode

BLOCKS = [(4, 2048, 128, 4), (16, 1024, 128, 4), (16, 2048, 128, 8), (32, 512, 64, 4), (8, 128, 32, 8),
          (4, 128, 128, 4), (16, 256, 32, 4)]


@pytest.mark.parametrize("block_n, block_k, group, num_warps", BLOCKS)
def test_int4_layout_covers_the_block_once(block_n, block_k, group, num_warps):
    chosen = gluon_decode.int4_layout(block_n, block_k, group, num_warps)
    words, groups = group // 8, block_k // group
    assert chosen.TN * chosen.TG * (words // chosen.V) == 32
    assert chosen.WN * chosen.WG == chosen.num_warps <= num_warps
    assert chosen.R * chosen.TN * chosen.WN == block_n
    assert groups % (chosen.TG * chosen.WG) == 0
    assert words % chosen.V == 0


@pytest.mark.parametrize("block_n, block_k, num_warps", [(8, 512, 8), (16, 1024, 4), (4, 2048, 4), (32, 64, 4),
                                                       (32, 8, 4), (16, 16, 8)])
def test_nv24_layout_covers_the_block_once(block_n, block_k, num_warps):
    chosen = gluon_decode.nv24_layout(block_n, block_k, num_warps)
    meta_bytes = block_k // 8
    assert chosen.TN * chosen.TP == 32
    assert chosen.WN * chosen.WP == chosen.num_warps <= num_warps
    assert chosen.R * chosen.TN * chosen.WN == block_n
    assert meta_bytes % (chosen.V * chosen.TP * chosen.WP) == 0


def test_layouts_prefer_wide_loads_and_all_warps():
    assert gluon_decode.int4_layout(16, 1024, 128, 4) == gluon_decode.Int4Layout(4, 4, 4, 1, 8, 4, 1)
    assert gluon_decode.nv24_layout(16, 1024, 4) == gluon_decode.Nv24Layout(4, 4, 4, 1, 32, 4, 1)


@pytest.mark.parametrize("block_n, tile, num_warps, expected", [
    (32, 128, 8, (8, 2, 2, 8)), (16, 128, 8, (8, 1, 2, 8)), (8, 128, 8, (4, 1, 2, 4)), (16, 64, 4, (4, 1, 4, 4)),
    (2, 64, 4, None)])
def test_hybrid_layout(block_n, tile, num_warps, expected):
    chosen = gluon_decode.hybrid_layout(block_n, tile, num_warps)
    assert (chosen and (chosen.num_warps, chosen.R, chosen.TN, chosen.WN)) == expected


@pytest.mark.parametrize("block_b, block_n, group, num_warps", [(8, 16, 128, 4), (2, 16, 128, 8), (16, 32, 32, 8),
                                                               (4, 128, 64, 4)])
def test_bsr_layout_covers_the_blocks_once(block_b, block_n, group, num_warps):
    chosen = gluon_decode.bsr_layout(block_b, block_n, group, num_warps)
    words = group // 8
    assert chosen.TB * chosen.TN * (words // chosen.V) == 32
    assert chosen.WB * chosen.WN == chosen.num_warps <= num_warps
    assert chosen.R * chosen.TN * chosen.WN == block_n
    assert block_b % (chosen.TB * chosen.WB) == 0


def explicit(layout, block_n, block_k, dims, dtype=torch.bfloat16, **config):
    return gluon_decode.explicit_kernel(layout, block_n, block_k, dims, decode.Config(block_n, block_k, **config),
                                        dtype)


def test_a_block_too_small_for_one_warp_runs_the_triton_kernel():
    assert gluon_decode.int4_layout(1, 128, 128, 4) is None
    assert explicit("int4", 1, 128, (8, 128, 128)) is None
    assert explicit("nv24", 4, 8, (8, 8, 0)) is None
    assert explicit("nv24_int4", 1, 256, (8, 256, 128)) is None
    kernel, extra, constexprs = explicit("nv24", 8, 512, (64, 1000, 0), num_warps=8)
    assert kernel is gluon_decode.nv24_gemv_kernel and extra == (125,) and constexprs["num_warps"] == 8


def test_nv24_int4_runs_the_triton_kernel_unless_x_is_bf16():
    """It reads x as pairs of bf16; INT4 converts whatever it loads, but leaves fp32 x to the Triton kernel,
    which dequantizes each weight before its product (the Gluon ones share the scale over a group)."""
    assert explicit("nv24_int4", 16, 512, (64, 1000, 128))[0] is gluon_decode.nv24_int4_gemv_kernel
    assert explicit("nv24_int4", 16, 512, (64, 1000, 128), torch.float16) is None
    assert explicit("nv24_int4", 16, 512, (64, 1000, 128), torch.float32) is None
    assert explicit("int4", 16, 512, (64, 1000, 128), torch.float16)[0] is gluon_decode.int4_gemv_kernel
    assert explicit("int4", 16, 512, (64, 1000, 128), torch.float32) is None
    assert explicit("bsr_int4", 16, 512, (64, 1000, 32, 16), torch.float32) is None


@pytest.mark.parametrize("layout", ["int4", "nv24", "bsr_int4"])
def test_k_off_the_8_input_words_runs_the_triton_kernel(layout):
    """These mask x a word of 8 inputs at a time (so its loads stay vectors whatever K's alignment)."""
    dims = (64, 1004, 32, 16)
    assert explicit(layout, 16, 512, dims) is None
    assert explicit(layout, 16, 512, (64, 1000, 32, 16)) is not None


def compiled_loop(layout: str, block_n: int, block_k: int, group: int, num_warps: int) -> collections.Counter:
    """Instruction counts of the K loop of `layout`'s kernel compiled for sm_90, in a process without
    TRITON_INTERPRET (under it Triton's own reduction helpers are interpreted functions)."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("gluon_sass.py")
    arguments = [layout, *map(str, (block_n, block_k, group, num_warps))]
    done = subprocess.run([sys.executable, str(script), *arguments], env=env, capture_output=True, text=True,
                          check=True)
    return collections.Counter(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("layout, block_n, block_k, group, num_warps, most_per_word", [
    ("int4", 16, 1024, 128, 4, 45), ("int4", 4, 2048, 128, 4, 55), ("int4", 8, 256, 32, 4, 85),
    ("nv24", 16, 1024, 0, 4, 22), ("nv24", 8, 512, 0, 8, 35), ("hybrid", 32, 128, 0, 4, 28),
    ("bsr_int4", 8, 0, 128, 4, 54), ("nv24_int4", 16, 2048, 128, 4, 104)])
def test_loop_stays_in_registers(layout, block_n, block_k, group, num_warps, most_per_word):
    """The K loop has no shared memory and no barrier (`decode`'s INT4 and NV24 kernels have both), loads the
    weight words 16 bytes at a time where a thread holds 4, and stays under its count of instructions a 32-bit
    word (about 10% above what triton 3.7 compiles; fewer rows a thread convert x for fewer words). HYBRID's
    words are counted as those of a DENSE block, which loads in 16-byte runs too; its NV24 blocks in 8."""
    ops = compiled_loop(layout, block_n, block_k, group, num_warps)
    config = decode.Config(block_n, block_k, 1, num_warps)
    if layout == "bsr_int4":  # block_n kept 16 x group blocks a step
        _, _, chosen = gluon_decode.explicit_kernel(layout, 16, group, (4096, 4096, group, 16), config,
                                                    torch.bfloat16)
        block_k = 16 * group
    else:
        _, _, chosen = gluon_decode.explicit_kernel(layout, block_n, block_k, (4096, 4096, group), config,
                                                    torch.bfloat16)
    opcodes = {op.split(".")[0] for op in ops}
    assert opcodes and not {"BAR", "STS", "LDS"} & opcodes
    if chosen.get("V", 4) == 4 or layout in ("nv24", "nv24_int4") and chosen["V"] >= 2:
        assert ops["LDG.E.128"] + ops["LDG.E.128.CONSTANT"] > 0  # NV24_INT4: x; its 2 words a thread: 8 bytes
    if layout in ("hybrid", "nv24_int4"):
        assert ops["LDG.E.64"] > 0
    words = block_n * block_k // {"int4": 8, "bsr_int4": 8, "nv24": 4, "nv24_int4": 16, "hybrid": 2}[layout]
    assert sum(ops.values()) * 32 * chosen["num_warps"] / words < most_per_word


@pytest.mark.parametrize("shape, dtype, fresh", [((1, 64), "bfloat16", False), ((1, 63), "bfloat16", True),
                                                 ((1, 128), "float16", False)])
def test_x_as_pairs_pads_odd_k_and_keeps_aligned_x(shape, dtype, fresh):
    x = torch.randn(shape).to(getattr(torch, dtype))
    pairs = gluon_decode.x_as_pairs(x)
    assert (pairs is not x) == fresh
    assert pairs.shape[1] % 2 == 0 and pairs.stride(1) == 1 and pairs.data_ptr() % 4 == 0
    assert torch.equal(pairs[:, : shape[1]], x) and not pairs[:, shape[1]:].any()


def test_x_as_pairs_copies_a_misaligned_view():
    x = torch.randn(1, 65).bfloat16()[:, 1:]
    pairs = gluon_decode.x_as_pairs(x)
    assert pairs.data_ptr() % 4 == 0 and torch.equal(pairs, x)

