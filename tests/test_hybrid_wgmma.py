"""HYBRID grids and NV24 weights on Hopper's warpgroup mma (`kernels.hybrid_wgmma`; grids with NV24 tiles and
NV24 weights on its warp-specialized variant, `kernels.hybrid_wgmma_ws`): which products they take, their sm_90
code compiled on the CPU (no GPU needed), and on the GPU the results against the reference."""
import collections
import itertools
import types

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from sparc import kernels
from sparc.ir import TileFormat
from sparc.kernels import hybrid_mma, hybrid_wgmma, hybrid_wgmma_ws, nv24_mma, tuning
from test_hybrid_mma import random_grid
from test_int4_mma import sass_report
from test_kernels import GPU, assert_matches_reference, make_case

DENSE, NV24, ZERO = int(TileFormat.DENSE), int(TileFormat.NV24), int(TileFormat.ZERO)
SHAPES = sorted({(c.block_m, c.block_n, c.num_warps) for c in hybrid_wgmma.candidates(256)})
WS_SHAPES = sorted({(c.block_m, c.block_n, c.num_warps) for c in hybrid_wgmma.candidates(256, nv24=True)})


def grid_of(n: int, k: int, zero_share: float, seed: int, nv24: bool = False) -> np.ndarray:
    """DENSE tiles with a share of ZERO ones (and one NV24 tile if asked)."""
    rng = np.random.default_rng(seed)
    grid = np.where(rng.random((-(-n // 128), -(-k // 128))) < zero_share, ZERO, DENSE).astype(np.uint8)
    if nv24:
        grid[0, 0] = NV24
    return grid


def the_loop(block_m, block_n, num_warps, has_zero) -> collections.Counter:
    """Instruction counts of the kernel's tile-column loop compiled for sm_90: the loop that issues wgmma."""
    loops = sass_report("--loops", "wgmma_hybrid", block_m, block_n, num_warps, has_zero)
    return collections.Counter(next(loop for loop in loops if loop.get("HGMMA.64")))


@pytest.mark.parametrize("block_m, block_n, num_warps", SHAPES)
@pytest.mark.parametrize("has_zero", [0, 1])
def test_loop_moves_operands_by_tma_only(block_m, block_n, num_warps, has_zero):
    """Per tile column the loop asks the TMA engine for 4 boxes (two halves of x and of the tile rows),
    issues 8 wgmma of K = 16 per 64 weight rows a warpgroup holds, waits once (twice with the ZERO branch), and
    loads from global memory only the tile's format code and offset (and the code again for the branch);
    nothing spills."""
    ops = the_loop(block_m, block_n, num_warps, has_zero)
    assert ops["UTMALDG.2D"] == 4
    assert ops["HGMMA.64"] == 8 * block_n // (16 * num_warps)
    assert ops["WARPGROUP.DEPBAR.LE"] == 1 + has_zero
    loads = {op: count for op, count in ops.items() if op.startswith("LDG")}
    assert loads == {"LDG.E.U8": 1 + has_zero, "LDG.E.64": 1}
    assert not {"LDL", "STL", "LDS", "STS"} & {op.split(".")[0] for op in ops}


@pytest.mark.parametrize("has_zero", [0, 1])
def test_waits_for_the_kernel_before_first(has_zero):
    """With dependent launches nothing is read or written before the kernel before has finished: asking for
    the weights' first stages before the wait measured slower (RESULTS.md)."""
    where = sass_report("--pdl", "wgmma_hybrid", 64, 128, 4, has_zero)
    assert where["waits"] == 1 and where["releases"] == 1 and where["wait_before_loop"]
    assert where["loads_before_wait"] == 0 and where["stores_before_wait"] == 0


@pytest.mark.parametrize("plain, group", [(False, 0), (True, 0), (True, 128)])
@pytest.mark.parametrize("block_m, block_n, num_warps", WS_SHAPES)
def test_warp_specialized_loops(block_m, block_n, num_warps, plain, group):
    """The producer's loop asks the TMA engine for x's, a DENSE tile's and the staged NV24 rows' boxes (6; an
    NV24 weight, `plain`: no DENSE tile's, 4), reads the staged rows from shared memory, stores the expanded
    block 16 bytes at a time and fences once a half column; from global memory it loads only tile entries (this
    column's and the staged one's; an NV24 weight: none). The consumer's issues 8 wgmma of K = 16 per 64 weight
    rows a warpgroup holds and asks for nothing. Nothing spills. An NV24_INT4 weight (`group`) also loads each half's
    scales and minimums, and dequantizes two values a bf16x2 fused multiply-add, with no conversion."""
    loops = [collections.Counter(loop) for loop in
             sass_report("--loops", "wgmma_hybrid_ws", block_m, block_n, num_warps, int(plain), group)]
    # the smallest loop that fences and runs no wgmma, and the smallest that runs wgmma and does not fence
    producer = next(loop for loop in loops if loop["MEMBAR.ALL.CTA"] and not loop["HGMMA.64"])
    consumer = next(loop for loop in loops if loop["HGMMA.64"] and not loop["MEMBAR.ALL.CTA"])
    assert producer["UTMALDG.2D"] == (4 if plain else 6) and producer["MEMBAR.ALL.CTA"] == 2
    assert producer["STS.128"] >= block_n * 128 * 2 // (16 * 32 * hybrid_wgmma_ws.PRODUCERS)
    loads = {"LDG.E.U16"} if group else set() if plain else {"LDG.E.U8", "LDG.E.64"}
    assert {op for op in producer if op.startswith("LDG")} == loads
    assert producer["HFMA2.BF16_V2"] == (block_n * 128 // (32 * hybrid_wgmma_ws.PRODUCERS) // 4 if group else 0)
    assert not any(op.startswith(("I2F", "F2F")) for op in producer)
    assert consumer["HGMMA.64"] == 8 * block_n // (16 * num_warps) and not consumer["UTMALDG.2D"]
    assert not {"LDL", "STL"} & {op.split(".")[0] for loop in loops for op in loop}


def test_candidates_fit_shared_memory_and_registers():
    for m, nv24 in itertools.product((2, 16, 17, 64, 100, 256), (False, True)):
        chosen = hybrid_wgmma.candidates(m, nv24)
        assert chosen and all(c.block_m <= max(16, 1 << (m - 1).bit_length()) for c in chosen)
        for c in chosen:
            staging = hybrid_wgmma_ws.staging_bytes(c.block_n) if nv24 else 0
            stages = hybrid_wgmma.stages_for(c.block_m, c.block_n, nv24)
            stage_bytes = (128 if nv24 else 256) * (c.block_m + c.block_n)  # half a column's, or a column's
            assert stages >= (3 if nv24 else 2) and stages * stage_bytes + staging <= hybrid_wgmma.SHARED_BYTES
            assert c.block_m * c.block_n // (32 * c.num_warps) <= 128 and 128 % c.block_n == 0


def fake_x(m: int, k: int, dtype=torch.bfloat16):
    return types.SimpleNamespace(shape=(m, k), is_cuda=True, dtype=dtype, device="cuda")  # what `supports` reads


@pytest.mark.parametrize("m, k, zero_share, nv24, dtype, runs", [
    (2, 512, 0.0, False, torch.bfloat16, True), (256, 512, 0.3, False, torch.float16, True),
    (1, 512, 0.0, False, torch.bfloat16, False), (257, 512, 0.0, False, torch.bfloat16, False),
    (64, 504, 0.0, False, torch.bfloat16, False), (64, 512, 0.0, True, torch.bfloat16, True),
    (64, 512, 1.0, False, torch.bfloat16, False), (64, 512, 0.0, False, torch.float32, False)])
def test_takes_grids_of_whole_tiles(m, k, zero_share, nv24, dtype, runs, monkeypatch):
    """2 to 256 rows, K a multiple of 128, some DENSE or NV24 tile, x in the buffers' dtype."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    packed = make_case("hybrid", 200, k, dtype if dtype != torch.float32 else torch.bfloat16, 128, 1.0, 0,
                       formats=grid_of(200, k, zero_share, 0, nv24), tile=128).pack()
    assert hybrid_wgmma.supports("hybrid", fake_x(m, k, dtype), packed.tensors) == runs
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert not hybrid_wgmma.supports("hybrid", fake_x(m, k, dtype), packed.tensors)


@pytest.mark.parametrize("layout", ["nv24", "nv24_int4"])
@pytest.mark.parametrize("m, k, dtype, runs", [
    (2, 512, torch.bfloat16, True), (256, 512, torch.float16, True), (1, 512, torch.bfloat16, False),
    (257, 512, torch.bfloat16, False), (64, 504, torch.bfloat16, False), (64, 512, torch.float32, False)])
def test_takes_nv24_weights_of_whole_tiles(layout, m, k, dtype, runs, monkeypatch):
    """NV24 and NV24_INT4 (group 128) weights: 2 to 256 rows, K a multiple of 128 (and of 256, NV24_INT4), x in
    the values' (scales') dtype; past 128 rows the mma kernel runs those it takes, untuned as the rebuild."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    packed = make_case(layout, 200, k, dtype if dtype != torch.float32 else torch.bfloat16, 128, 0.5, 0).pack()
    x = fake_x(m, k, dtype)
    assert hybrid_wgmma.supports(layout, x, packed.tensors) == runs
    assert hybrid_wgmma.candidates_for(layout, x, packed.tensors) == (hybrid_wgmma.candidates(m, True) if runs
                                                                       else [])
    if m > nv24_mma.MOST_M:
        assert nv24_mma.supports(layout, x, packed.tensors) == runs
        assert tuning.default("mma", layout, m) == kernels.rebuild.CONFIG
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert not hybrid_wgmma.supports(layout, x, packed.tensors)


@pytest.mark.parametrize("m", [16, 100, 200])
def test_its_configs_are_candidates_of_the_mma_kernel_where_it_takes_the_grid(m, monkeypatch):
    """The tuner weighs both kernels (and past 64 rows the rebuild); past 128 rows the mma kernel runs only the
    grids this one takes (K a multiple of 128), others the tile kernel's rebuild or tiles."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    rebuild = [kernels.rebuild.CONFIG] if m > 64 else []
    for k, nv24 in [(512, False), (512, True), (504, True)]:
        grid = grid_of(256, k, 0.2, 0, nv24)
        packed = make_case("hybrid", 256, k, torch.bfloat16, 128, 1.0, 0, formats=grid, tile=128).pack()
        x = fake_x(m, k)
        more = hybrid_wgmma.candidates_for("hybrid", x, packed.tensors)
        assert more == (hybrid_wgmma.candidates(m, nv24) if k % 128 == 0 else [])
        assert tuning.candidates("mma", "hybrid", m, more) == hybrid_mma.candidates("hybrid", m) + more + rebuild
        assert hybrid_mma.supports("hybrid", x, packed.tensors) == (m <= hybrid_mma.MOST_M or k % 128 == 0)


def draw_shape(data):
    """(N, K, M, dtype) of a product the wgmma kernels take."""
    return (data.draw(st.integers(1, 1200)), 128 * data.draw(st.integers(1, 12)),
            data.draw(st.integers(2, hybrid_wgmma.MAX_M)), data.draw(st.sampled_from([torch.bfloat16, torch.float16])))


def check_drawn_run(data, layout: str, packed, m: int, dtype, candidates):
    """The mma kernel that runs the product (past 128 rows too) with a config drawn from candidates(m) and
    candidates(MAX_M) (the M bucket's table config may have more x rows than M needs: the kernel then runs
    fewer), a drawn split and bias, against the reference on fresh x."""
    n, k = packed.dims[0], packed.dims[1]
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype) if data.draw(st.booleans()) else None
    config = data.draw(st.sampled_from([*candidates(m), *candidates(hybrid_wgmma.MAX_M)]))
    split = data.draw(st.sampled_from([None, 1, 3]))
    kernel, matmul = tuning.kernel_for(layout, x, packed.tensors)
    assert kernel == "mma"
    out = matmul(x, layout, list(packed.tensors), packed.dims, bias, config, split_k=split)
    assert_matches_reference(out, x, packed, bias)


@pytest.mark.gpu
@GPU
@given(data=st.data())
def test_matches_reference_gpu(data):
    n, k, m, dtype = draw_shape(data)
    seed = data.draw(st.integers(0, 99))
    if data.draw(st.booleans()):  # DENSE, NV24 and ZERO tiles
        grid = random_grid(n, k, data.draw(st.sampled_from([0.0, 0.3, 0.7])), seed)
        grid[0, 0] = NV24
    else:
        grid = grid_of(n, k, data.draw(st.sampled_from([0.0, 0.3])), seed)
        grid[0, 0] = DENSE
    packed = make_case("hybrid", n, k, dtype, 128, data.draw(st.sampled_from([0.3, 1.0])), data.draw(
        st.integers(0, 99)), formats=grid, tile=128).pack().to("cuda")
    nv24 = bool((grid == NV24).any())
    check_drawn_run(data, "hybrid", packed, m, dtype, lambda rows: hybrid_wgmma.candidates(rows, nv24))


@pytest.mark.gpu
@GPU
@given(data=st.data())
def test_nv24_weights_match_reference_gpu(data):
    layout = data.draw(st.sampled_from(["nv24", "nv24_int4"]))
    group = data.draw(st.sampled_from(hybrid_wgmma.GROUPS)) if layout == "nv24_int4" else 128
    n, k, m, dtype = draw_shape(data)
    k = max(k, 2 * group) // (2 * group) * (2 * group)
    packed = make_case(layout, n, k, dtype, group, data.draw(st.sampled_from([0.3, 0.5, 1.0])),
                       data.draw(st.integers(0, 99))).pack().to("cuda")
    check_drawn_run(data, layout, packed, m, dtype, lambda rows: hybrid_wgmma.candidates(rows, True))


@pytest.mark.gpu
@pytest.mark.parametrize("m", [2, 16, 64, 200, 256])
@pytest.mark.parametrize("grid", ["dense", "dense_zero", "mixed"])
def test_every_candidate_on_a_llama_shape_gpu(m, grid):
    tiles = (random_grid(1024, 4096, 0.3, m) if grid == "mixed"
             else grid_of(1024, 4096, 0.3 if grid == "dense_zero" else 0.0, m))
    packed = make_case("hybrid", 1024, 4096, torch.bfloat16, 128, 1.0, m, formats=tiles, tile=128).pack().to("cuda")
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    for config in hybrid_wgmma.candidates(m, grid == "mixed"):
        assert_matches_reference(hybrid_wgmma.matmul(x, "hybrid", list(packed.tensors), packed.dims, None, config),
                                 x, packed, None)


@pytest.mark.gpu
def test_runs_in_a_cuda_graph_without_sync_gpu():
    packed = make_case("hybrid", 1000, 2048, torch.bfloat16, 128, 1.0, 3, formats=grid_of(1000, 2048, 0.2, 3),
                       tile=128).pack().to("cuda")
    bias = torch.randn(1000, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(200, 2048, device="cuda", dtype=torch.bfloat16)

    def run():
        config = hybrid_wgmma.Config(128, 128, 0, 8)
        return hybrid_mma.matmul(x, "hybrid", list(packed.tensors), packed.dims, bias, config)

    run()  # compile outside the graph
    torch.cuda.set_sync_debug_mode("error")
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    x.copy_(torch.randn_like(x))
    graph.replay()
    assert_matches_reference(out, x, packed, bias)
