"""INT4 at 17 to 256 rows of x on Hopper's warpgroup mma (`kernels.int4_wgmma`): the x layout, the sm_90 code
compiled on the CPU (no GPU needed), and on the GPU the results against the reference."""
import collections
import itertools
import types

import pytest
import torch
from hypothesis import given, strategies as st

from sparc import kernels
from sparc.kernels import int4_wgmma, int4_wgmma_ws, tuning
from test_int4_mma import compiled_loop, elements, sass_report
from test_kernels import GPU, assert_matches_reference, make_case


@pytest.mark.parametrize("block_m, block_n, num_warps, registers", int4_wgmma.SHAPES)
def test_x_layout_covers_a_step_with_16_byte_loads(block_m, block_n, num_warps, registers):
    """Every x value of a step once (warps past BLOCK_M / 8 rows load the same rows); a thread's first three
    registers are 8 contiguous inputs (one 16-byte load), the next two input bits 5 and 6, which the
    renumbering turns into 32 consecutive k (four 16-byte stores)."""
    lx = int4_wgmma.x_layout(block_m, num_warps)
    counts = collections.Counter(elements(lx))
    assert set(counts) == set(itertools.product(range(block_m), range(128)))
    assert set(counts.values()) == {max(1, 8 * num_warps // block_m)}
    assert lx.reg_bases[:5] == [[0, 1], [0, 2], [0, 4], [0, 32], [0, 64]]


@pytest.mark.parametrize("block_m, block_n, num_warps, registers", int4_wgmma.SHAPES)
@pytest.mark.parametrize("group", [128, 32])
def test_loop_runs_wgmma_on_registers(block_m, block_n, num_warps, registers, group):
    """The A operand conversion compiles (it is asserted trivial); per K step the loop loads words and x 16
    bytes at a time, stores x 16 bytes at a time, issues 8 wgmma of K = 16 per 64 weight rows a warpgroup
    holds, waits once (ptxas did not serialize the wgmma) and keeps every register (no spill)."""
    ops = compiled_loop("wgmma", block_m, block_n, num_warps, group, registers)
    x_loads = 4 * max(1, block_m // (8 * num_warps))
    assert ops["LDG.E.128"] == x_loads + block_n // (8 * num_warps)
    assert ops["STS.128"] == x_loads
    assert ops["HGMMA.64"] == 8 * block_n // (16 * num_warps)
    assert ops["WARPGROUP.DEPBAR.LE"] == 1 and ops["WARPGROUP.ARRIVE"] == 1
    assert not {"LDL", "STL"} & {op.split(".")[0] for op in ops}


def compiled_loops(*config) -> list[collections.Counter]:
    """Instruction counts of every loop of `int4_wgmma_ws`'s kernel compiled for sm_90, the smallest first."""
    return [collections.Counter(loop) for loop in sass_report("--loops", "wgmma_ws", *config)]


@pytest.mark.parametrize("block_m, block_n, num_warps, stages, producers", int4_wgmma.WS_SHAPES)
@pytest.mark.parametrize("group", [128, 32])
def test_warp_specialized_loops(block_m, block_n, num_warps, stages, producers, group):
    """The producer's K loop loads a step's words 16 bytes at a time, stores the dequantized block 16 bytes at
    a time and fences once; the consumer's issues 8 wgmma of K = 16 per 64 weight rows a warpgroup holds, in
    two halves of 64 inputs, waits for all but one after each and asks the TMA for two blocks of x, with no
    fence; no spill anywhere."""
    loops = compiled_loops(block_m, block_n, num_warps, group, stages, producers)
    producer = next(loop for loop in loops if loop["STS.128"])
    consumer = next(loop for loop in loops if loop["HGMMA.64"])
    weights_a_thread = block_n * 128 // (32 * producers)
    assert producer["LDG.E.128"] == weights_a_thread // 32 and producer["STS.128"] == weights_a_thread // 8
    assert producer["MEMBAR.ALL.CTA"] == 1 and not producer["HGMMA.64"] and not producer["UTMALDG.2D"]
    assert consumer["HGMMA.64"] == 8 * block_n // (16 * num_warps) and consumer["WARPGROUP.DEPBAR.LE"] == 2
    assert consumer["UTMALDG.2D"] == 2 and not consumer["MEMBAR.ALL.CTA"]
    assert not {"LDL", "STL"} & {op.split(".")[0] for loop in loops for op in loop}


def test_warp_specialized_stages_fit_shared_memory():
    for block_m, block_n, num_warps, stages, producers in int4_wgmma.WS_SHAPES:
        x_stages = int4_wgmma_ws.x_stages(block_m, block_n, stages)
        assert x_stages >= 4 and stages * block_n * 256 + x_stages * block_m * 128 <= 200 * 1024


@pytest.mark.parametrize("m, k, layout, x_dtype, runs", [
    (17, 256, "int4", torch.bfloat16, True), (256, 256, "int4", torch.float16, False),
    (256, 256, "int4", torch.bfloat16, True), (16, 256, "int4", torch.bfloat16, False),
    (257, 256, "int4", torch.bfloat16, False), (64, 252, "int4", torch.bfloat16, False),
    (64, 256, "nv24_int4", torch.bfloat16, False), (64, 256, "dense", torch.bfloat16, False),
    (64, 256, "int4", torch.float32, False)])
def test_runs_int4_from_17_to_256_rows_on_hopper(m, k, layout, x_dtype, runs, monkeypatch):
    """bf16 scales meet fp16 x elsewhere, and K must allow 16-byte loads of x."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    packed = make_case(layout, 64, k, torch.bfloat16, 128, 1.0, 0).pack()
    x = types.SimpleNamespace(shape=(m, k), is_cuda=True, dtype=x_dtype, device="cuda")  # what `supports` reads
    assert int4_wgmma.supports(layout, x, packed.tensors) == runs


def test_candidates_and_default_are_shapes_that_fit_and_past_64_rows_the_rebuild():
    for m in (17, 40, 64, 100, 256):
        chosen = int4_wgmma.candidates("int4", m)
        assert chosen and all((c.block_m, c.block_n, c.num_warps, c.max_registers) in int4_wgmma.SHAPES
                              for c in chosen if not c.stages)
        assert all((c.block_m, c.block_n, c.num_warps, c.stages, c.producers) in int4_wgmma.WS_SHAPES
                   for c in chosen if c.stages)
        assert any(c.stages for c in chosen)
        assert all(c.block_m <= max(32, 1 << (m - 1).bit_length()) for c in chosen)
        assert tuning.candidates("wgmma", "int4", m) == chosen + ([kernels.rebuild.CONFIG] if m > 64 else [])
        default = int4_wgmma.default("int4", m)  # untuned shapes get a shape that does not spill
        assert (default.block_m, default.block_n, default.num_warps, default.max_registers) in int4_wgmma.SHAPES


@pytest.mark.gpu
@GPU
@given(data=st.data())
def test_matches_reference_gpu(data):
    group = data.draw(st.sampled_from([32, 64, 128]))
    n, k = data.draw(st.integers(1, 2500)), 8 * data.draw(st.integers(1, 300))
    m = data.draw(st.integers(int4_wgmma.MIN_M, int4_wgmma.MAX_M))
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]))
    packed = make_case("int4", n, k, dtype, group, 1.0, data.draw(st.integers(0, 99))).pack().to("cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype) if data.draw(st.booleans()) else None
    # the M bucket's table config may have more x rows than M needs: the kernel then runs fewer
    config = data.draw(st.sampled_from([int4_wgmma.default("int4", m), *int4_wgmma.candidates("int4", m),
                                        *int4_wgmma.candidates("int4", int4_wgmma.MAX_M)]))
    split = data.draw(st.sampled_from([None, 1, 3]))
    # the kernel the product dispatches to (past 64 rows the tuned config of the nearest shape may be the rebuild)
    assert tuning.kernel_for("int4", x, packed.tensors)[0] == "wgmma"
    out = int4_wgmma.matmul(x, "int4", list(packed.tensors), packed.dims, bias, config, split_k=split)
    assert_matches_reference(out, x, packed, bias)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [17, 40, 64, 100, 256])
def test_every_candidate_on_a_llama_shape_gpu(m):
    packed = make_case("int4", 1024, 4096, torch.bfloat16, 128, 1.0, m).pack().to("cuda")
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    for config in int4_wgmma.candidates("int4", m):
        assert_matches_reference(int4_wgmma.matmul(x, "int4", list(packed.tensors), packed.dims, None, config),
                                 x, packed, None)


@pytest.mark.gpu
def test_runs_in_a_cuda_graph_without_sync_gpu():
    packed = make_case("int4", 1000, 2048, torch.bfloat16, 128, 1.0, 3).pack().to("cuda")
    bias = torch.randn(1000, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(100, 2048, device="cuda", dtype=torch.bfloat16)
    assert kernels.kernel_name(x, "int4", packed.tensors, packed.dims) == "wgmma"
    kernels.matmul(x, "int4", packed.tensors, packed.dims, bias)  # compile outside the graph
    torch.cuda.set_sync_debug_mode("error")
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = kernels.matmul(x, "int4", packed.tensors, packed.dims, bias)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    x.copy_(torch.randn_like(x))
    graph.replay()
    assert_matches_reference(out, x, packed, bias)
