"""INT4 and BSR_INT4 at small M on the tensor cores (`kernels.int4_mma`): the layouts, the sm_90 code compiled on
the CPU (no GPU needed), and on the GPU the results against the reference."""
import collections
import itertools
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

from sparc import kernels
from sparc.kernels import int4_mma, tuning
from test_kernels import GPU, assert_matches_reference, make_case

CONFIGS = [(64, 256, 128, 4, 16), (32, 512, 128, 2, 16), (64, 128, 128, 4, 64), (64, 256, 32, 4, 16),
           (16, 256, 64, 1, 8), (128, 128, 128, 4, 32), (32, 128, 64, 2, 32)]


def elements(layout) -> list[tuple[int, ...]]:
    """The coordinates every (register, lane, warp) of a linear layout holds."""
    bases = [*layout.reg_bases, *layout.lane_bases, *layout.warp_bases]
    held = []
    for chosen in itertools.product((0, 1), repeat=len(bases)):
        coordinate = [0] * len(layout.shape)
        for on, basis in zip(chosen, bases):
            if on:
                coordinate = [c ^ b for c, b in zip(coordinate, basis)]
        held.append(tuple(coordinate))
    return held


@pytest.mark.parametrize("block_n, block_k, group, num_warps, block_m", CONFIGS)
def test_layouts_cover_the_blocks(block_n, block_k, group, num_warps, block_m):
    """Every weight word once; every x pair once per warp (each warp multiplies the same x rows)."""
    lw, lx, _ = int4_mma.operand_layouts(block_n, block_k, block_m, group, num_warps)
    assert sorted(elements(lw)) == list(itertools.product(range(block_n), range(block_k // group), range(group // 8)))
    counts = collections.Counter(elements(lx))
    assert set(counts) == set(itertools.product(range(block_m), range(block_k // group), range(group // 2)))
    assert set(counts.values()) == {num_warps}


@pytest.mark.parametrize("block_n, block_k, group, num_warps, block_m", CONFIGS)
def test_a_thread_loads_16_contiguous_bytes_of_words_and_64_of_x(block_n, block_k, group, num_warps, block_m):
    """A thread's first two registers of words are 4 consecutive words of a row, its first four of x 16
    consecutive pairs of an x row: what the renumbering of K relies on (module docstring)."""
    lw, lx, _ = int4_mma.operand_layouts(block_n, block_k, block_m, group, num_warps)
    word_index = [(b[1] * (group // 8) + b[2], b[0]) for b in lw.reg_bases[:2]]
    assert word_index == [(1, 0), (2, 0)]
    pair_index = [(b[1] * (group // 2) + b[2], b[0]) for b in lx.reg_bases[:4]]
    assert pair_index == [(1, 0), (2, 0), (4, 0), (8, 0)]


def sass_report(*args):
    """What tests/gluon_sass.py prints for `args`, compiled for sm_90 in a process without TRITON_INTERPRET."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("gluon_sass.py")
    done = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])


def compiled_loop(kernel, *config) -> collections.Counter:
    """Instruction counts of a kernel's K loop compiled for sm_90."""
    return collections.Counter(sass_report(kernel, *config))


@pytest.mark.parametrize("kernel, block_n, block_k, group, num_warps, block_m, most_per_weight", [
    ("mma", 64, 256, 32, 4, 16, 4.8), ("mma", 128, 128, 128, 4, 32, 5.3), ("mma", 128, 128, 128, 4, 16, 4.4),
    ("mma", 16, 512, 128, 1, 16, 4.5), ("mma_bsr", 16, 128, 128, 1, 16, 4.9), ("mma_bsr", 16, 256, 64, 1, 16, 4.8),
    ("mma_bsr", 64, 128, 128, 4, 16, 4.8)])
def test_loop_stays_in_registers(kernel, block_n, block_k, group, num_warps, block_m, most_per_weight):
    """The operand conversions compile (they are asserted trivial), and the K loop has no shared memory, no
    barrier and no spill, loads words and x 16 bytes at a time, issues one mma per 16 x 16 weights and 8 x
    rows, and stays under its count of instructions a weight (about 10% above what triton 3.7 compiles)."""
    ops = compiled_loop(kernel, block_n, block_k, group, num_warps, block_m)
    opcodes = {op.split(".")[0] for op in ops}
    assert not {"BAR", "STS", "LDS", "LDL", "STL"} & opcodes
    weights_a_thread = block_n * block_k // (32 * num_warps)
    assert ops["LDG.E.128"] == weights_a_thread // 32 + block_m // 8 * block_k // 128 * 4
    assert ops["HMMA.16816.F32.BF16"] == weights_a_thread // 8 * block_m // 8
    assert sum(ops.values()) / weights_a_thread < most_per_weight


@pytest.mark.parametrize("layout, m, x_dtype, runs", [
    *[(layout, m, x_dtype, runs) for layout in ("int4", "bsr_int4") for m, x_dtype, runs in
      [(16, torch.bfloat16, True), (1, torch.bfloat16, False), (16, torch.float16, False)]],
    ("int4", 17, torch.bfloat16, False), ("bsr_int4", 17, torch.bfloat16, True),
    ("bsr_int4", 128, torch.bfloat16, True), ("bsr_int4", 129, torch.bfloat16, False),
    ("bsr_int4", 64, torch.float16, False)])
def test_runs_small_m_with_scales_in_x_dtype(layout, m, x_dtype, runs):
    """INT4 to 16 rows, BSR_INT4 to 128. Scales stored in bf16 meet fp16 x in the tile kernel: the fused
    dequantization computes in x's dtype."""
    packed = make_case(layout, 64, 256, torch.bfloat16, 128, 1.0, 0).pack()
    x = types.SimpleNamespace(shape=(m, 256), is_cuda=True, dtype=x_dtype)  # what `supports` reads of x
    assert int4_mma.supports(layout, x, packed.tensors) == runs


@pytest.mark.parametrize("layout", ["int4", "bsr_int4"])
def test_candidates_keep_x_in_few_registers(layout):
    for m in (2, 9, 16, 33, 64, 128):
        assert int4_mma.x_rows_for(m) == min(16, max(8, 1 << (m - 1).bit_length()))
        for config in int4_mma.candidates(layout, m):
            assert int4_mma.x_rows_for(m) // 8 * config.block_k // 128 <= 8
            assert config.block_n % (16 * config.num_warps) == 0 and config.block_k % 128 == 0


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["int4", "bsr_int4"])
@GPU
@given(data=st.data())
def test_matches_reference_gpu(layout, data):
    group = data.draw(st.sampled_from([32, 64, 128]))
    n, k = data.draw(st.integers(1, 2500)), data.draw(st.integers(1, 2500))
    m = data.draw(st.integers(2, int4_mma.BSR_MAX_M if layout == "bsr_int4" else int4_mma.MAX_M))
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]))
    options = dict(block_n=data.draw(st.sampled_from([16, 32, 64, 128])),
                   block_density=data.draw(st.sampled_from([0.0, 0.3, 1.0])))
    packed = make_case(layout, n, k, dtype, group, 1.0, data.draw(st.integers(0, 99)), **options).pack().to("cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype) if data.draw(st.booleans()) else None
    config = data.draw(st.sampled_from([int4_mma.default(layout, m), *int4_mma.candidates(layout, m)]))
    split = data.draw(st.sampled_from([None, 1, 3]))
    # the kernel the product dispatches to (past 64 rows the tuned config of the nearest shape may be the rebuild)
    assert tuning.kernel_for(layout, x, packed.tensors)[0] == "mma"
    out = int4_mma.matmul(x, layout, list(packed.tensors), packed.dims, bias, config, split_k=split)
    assert_matches_reference(out, x, packed, bias)


@pytest.mark.gpu
@pytest.mark.parametrize("layout, m", [("int4", 2), ("int4", 9), ("int4", 16), ("bsr_int4", 2), ("bsr_int4", 16),
                                       ("bsr_int4", 64), ("bsr_int4", 128)])
def test_every_candidate_on_a_llama_shape_gpu(layout, m):
    packed = make_case(layout, 1024, 4096, torch.bfloat16, 128, 1.0, m).pack().to("cuda")
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    for config in int4_mma.candidates(layout, m):
        assert_matches_reference(int4_mma.matmul(x, layout, list(packed.tensors), packed.dims, None, config),
                                 x, packed, None)
