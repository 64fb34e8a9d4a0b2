"""HYBRID grids of DENSE, NV24 and ZERO tiles at small M on the tensor cores (`kernels.hybrid_mma`): the layouts,
the sm_90 code compiled on the CPU (no GPU needed), and on the GPU the results against the reference."""
import collections
import itertools
import types

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from sparc import kernels
from sparc.ir import TileFormat
from sparc.kernels import hybrid_mma, tuning
from test_int4_mma import compiled_loop, elements
from test_kernels import GPU, assert_matches_reference, make_case

CODES = [int(TileFormat.DENSE), int(TileFormat.NV24), int(TileFormat.ZERO)]


def random_grid(n: int, k: int, dense_share: float, seed: int, tile: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (-(-n // tile), -(-k // tile))
    grid = np.where(rng.random(shape) < dense_share, int(TileFormat.DENSE), int(TileFormat.NV24))
    return np.where(rng.random(shape) < 0.1, int(TileFormat.ZERO), grid).astype(np.uint8)


@pytest.mark.parametrize("block_n, num_warps, warps_m", [(64, 4, 1), (128, 4, 1), (32, 2, 1), (128, 8, 1),
                                                        (64, 8, 2), (32, 4, 2)])
def test_dense_layout_covers_the_tile(block_n, num_warps, warps_m):
    """Every DENSE pair of the rows once per warp along M, 16 contiguous ones a thread."""
    lvd = hybrid_mma.dense_layout(block_n, num_warps, warps_m)
    counts = collections.Counter(elements(lvd))
    assert set(counts) == set(itertools.product(range(block_n), range(64))) and set(counts.values()) == {warps_m}
    assert lvd.reg_bases[:4] == [[0, 1], [0, 2], [0, 4], [0, 8]]


@pytest.mark.parametrize("block_m, num_warps", [(16, 4), (64, 8), (8, 2)])
def test_x_lands_in_dense_steps_with_16_byte_loads(block_m, num_warps):
    """x loaded for `x_to_dense_steps`: every pair of a chunk once, 4 contiguous ones a thread."""
    lg = kernels.nv24_mma.x_layout(block_m, num_warps, **hybrid_mma.DENSE_X_BITS)
    assert sorted(elements(lg)) == list(itertools.product(range(block_m), range(64)))
    assert lg.reg_bases[:2] == [[0, 1], [0, 2]]


@pytest.mark.parametrize("has_dense, has_nv24, block_n, num_warps, block_m, warps_m", [
    (1, 1, 64, 4, 16, 1), (1, 0, 64, 4, 16, 1), (0, 1, 64, 4, 16, 1), (1, 1, 64, 8, 64, 2), (1, 0, 128, 8, 64, 1),
    (1, 1, 128, 8, 64, 1)])
def test_loop_stays_in_registers(has_dense, has_nv24, block_n, num_warps, block_m, warps_m):
    """No shuffle or spill; 16-byte loads of the tiles, and of x for the DENSE steps (NV24's x: 4 bytes); x
    through shared memory, read 16 bytes an m-tile and 2 DENSE or 1 NV24 step; one mma a 16 x 16 DENSE or
    16 x 32 NV24 block and 8 x rows; only the formats present are compiled, each behind a branch on the tile's
    format (the loop holds more than its back edge)."""
    ops = compiled_loop("mma_hybrid", block_n, num_warps, block_m, has_dense, has_nv24, warps_m)
    assert not {"LDL", "STL", "SHFL"} & {op.split(".")[0] for op in ops}
    tiles_a_warp, m_tiles_a_warp = block_n * warps_m // (16 * num_warps), block_m // 8 // warps_m
    x_a_thread = block_m * 64 // (32 * num_warps)
    assert ops["LDG.E.EF.128"] == (8 * has_dense + 6 * has_nv24) * tiles_a_warp  # the tiles, evict-first
    assert ops["LDG.E.128"] == has_dense * x_a_thread // 4
    assert ops["LDG.E"] == has_nv24 * x_a_thread
    assert ops["LDS.128"] == 4 * m_tiles_a_warp * (has_dense + has_nv24)
    assert ops["HMMA.16816.F32.BF16"] == 8 * has_dense * tiles_a_warp * m_tiles_a_warp
    assert ops["HMMA.SP.16832.F32.BF16"] == 4 * has_nv24 * tiles_a_warp * m_tiles_a_warp
    assert ops["BRA"] >= 2


@pytest.mark.parametrize("has_dense, has_nv24", [(1, 1), (1, 0), (0, 1)])
def test_a_narrower_last_column_leaves_the_loop_alone(has_dense, has_nv24):
    """Where K % 128 != 0 the last tile column runs after the loop: the loop keeps its loads, shared reads and
    mma, and nothing spills."""
    aligned = compiled_loop("mma_hybrid", 64, 4, 16, has_dense, has_nv24, 1, 0)
    edge = compiled_loop("mma_hybrid", 64, 4, 16, has_dense, has_nv24, 1, 1)
    assert not {"LDL", "STL"} & {op.split(".")[0] for op in edge}
    for op in ("LDG.E.EF.128", "LDG.E.128", "LDS.128", "STS.128", "HMMA.16816.F32.BF16", "HMMA.SP.16832.F32.BF16"):
        assert edge[op] == aligned[op], op


@pytest.mark.parametrize("m", [16, 64, 128])
def test_candidates_fit_a_tile_row(m):
    for config in hybrid_mma.candidates("hybrid", m):
        warps_n = config.num_warps // config.warps_m
        assert config.block_n % (16 * warps_n) == 0 and hybrid_mma.TILE % config.block_n == 0
        assert min(64, m) // 8 % config.warps_m == 0


@pytest.mark.parametrize("m, runs", [(64, True), (128, True), (129, False)])
def test_runs_to_128_rows_in_programs_of_64(m, runs, monkeypatch):
    """Past 128 rows only on Hopper (`hybrid_wgmma`, tests/test_hybrid_wgmma.py)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    packed = make_case("hybrid", 256, 512, torch.bfloat16, 128, 1.0, 0, formats=random_grid(256, 512, 0.5, 0),
                       tile=128).pack()
    x = types.SimpleNamespace(shape=(m, 512), is_cuda=True, dtype=torch.bfloat16, device="cuda")  # what's read
    assert hybrid_mma.supports("hybrid", x, packed.tensors) == runs
    assert hybrid_mma.x_rows_for(m, hybrid_mma.MAX_M) == min(64, 1 << (m - 1).bit_length())


@pytest.mark.parametrize("k, tile, int4_tiles, dtype, runs", [
    (512, 128, False, torch.bfloat16, True), (504, 128, False, torch.bfloat16, True),
    (72, 128, False, torch.bfloat16, True), (500, 128, False, torch.bfloat16, False),
    (64, 128, False, torch.bfloat16, False), (512, 64, False, torch.bfloat16, False),
    (504, 64, False, torch.bfloat16, False), (72, 64, False, torch.bfloat16, False),
    (512, 128, True, torch.bfloat16, False), (512, 128, False, torch.float16, False)])
def test_runs_128_tiles_of_dense_nv24_and_zero_in_x_dtype(k, tile, int4_tiles, dtype, runs):
    """Also where K is not a multiple of 128 (a narrower last tile column), if K is one of 8 and above 64."""
    grid = random_grid(256, k, 0.5, 0, tile)
    if int4_tiles:
        grid[0, 0] = int(TileFormat.INT4)
    packed = make_case("hybrid", 256, k, torch.bfloat16, 128, 1.0, 0, formats=grid, tile=tile).pack()
    x = types.SimpleNamespace(shape=(16, k), is_cuda=True, dtype=dtype)  # what `supports` reads of x
    assert hybrid_mma.supports("hybrid", x, packed.tensors) == runs


@pytest.mark.gpu
@GPU
@given(data=st.data())
def test_matches_reference_gpu(data):
    n = data.draw(st.integers(1, 1200))
    k = 128 * data.draw(st.integers(1, 12)) - data.draw(st.sampled_from([0, 0, 8, 56]))  # last column narrower
    m = data.draw(st.integers(1, hybrid_mma.MOST_M))
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]))
    grid = random_grid(n, k, data.draw(st.sampled_from([0.0, 0.3, 1.0])), data.draw(st.integers(0, 99)))
    packed = make_case("hybrid", n, k, dtype, 128, data.draw(st.sampled_from([0.3, 1.0])), data.draw(
        st.integers(0, 99)), formats=grid, tile=128).pack().to("cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype) if data.draw(st.booleans()) else None
    config = data.draw(st.sampled_from([hybrid_mma.default("hybrid", m), *hybrid_mma.candidates("hybrid", m)]))
    split = data.draw(st.sampled_from([None, 1, 3]))
    mixed = packed.tensors[2].numel() > 0 and packed.tensors[3].numel() > 0
    one_row_here = mixed or dtype == torch.float16  # the decode kernel takes bf16 grids of one format
    # the kernel the product dispatches to (past 64 rows the tuned config of the nearest shape may be the rebuild)
    assert tuning.kernel_for("hybrid", x, packed.tensors)[0] == ("mma" if m > 1 or one_row_here else "decode")
    out = hybrid_mma.matmul(x, "hybrid", list(packed.tensors), packed.dims, bias, config, split_k=split)
    assert_matches_reference(out, x, packed, bias)


@pytest.mark.parametrize("dense_share, dtype, mma", [(0.3, torch.bfloat16, True), (0.0, torch.bfloat16, False),
                                                     (1.0, torch.bfloat16, False), (0.0, torch.float16, True),
                                                     (1.0, torch.float16, True)])
def test_one_row_runs_here_where_tiles_mix_or_x_is_fp16(dense_share, dtype, mma):
    """At M = 1 the decode kernel keeps bf16 grids of one format (with ZERO tiles); mixed ones, and fp16 ones
    (which it does not take), run here."""
    packed = make_case("hybrid", 256, 1024, dtype, 128, 1.0, 0, formats=random_grid(256, 1024, dense_share, 1),
                       tile=128).pack()
    assert all(t.numel() for t in packed.tensors[2:4]) == (dense_share == 0.3)
    x = types.SimpleNamespace(shape=(1, 1024), is_cuda=True, dtype=dtype)  # what `supports` reads of x
    assert hybrid_mma.supports("hybrid", x, packed.tensors) == mma
    assert not hybrid_mma.supports("hybrid", types.SimpleNamespace(shape=(0, 1024), is_cuda=True,
                                                                   dtype=torch.bfloat16), packed.tensors)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 2, 9, 16, 40, 64, 100])
def test_every_candidate_on_a_llama_shape_gpu(m):
    packed = make_case("hybrid", 1024, 4096, torch.bfloat16, 128, 1.0, m, formats=random_grid(1024, 4096, 0.3, m),
                       tile=128).pack().to("cuda")
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    assert tuning.kernel_for("hybrid", x, packed.tensors)[0] == "mma"
    for config in hybrid_mma.candidates("hybrid", m):
        assert_matches_reference(hybrid_mma.matmul(x, "hybrid", list(packed.tensors), packed.dims, None, config),
                                 x, packed, None)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 16, 100])
def test_every_candidate_where_the_last_column_is_narrower_gpu(m):
    """SmolLM2-135M's MLP input, K = 576: four and a half tile columns."""
    packed = make_case("hybrid", 1536, 576, torch.bfloat16, 128, 1.0, m, formats=random_grid(1536, 576, 0.3, m),
                       tile=128).pack().to("cuda")
    x = torch.randn(m, 576, device="cuda", dtype=torch.bfloat16)
    assert tuning.kernel_for("hybrid", x, packed.tensors)[0] == "mma"
    for config in hybrid_mma.candidates("hybrid", m):
        for split in (None, 1, 5):
            out = hybrid_mma.matmul(x, "hybrid", list(packed.tensors), packed.dims, None, config, split_k=split)
            assert_matches_reference(out, x, packed, None)
