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


@pytest.mark.parametrize("block_n, num_warps, block_m", [(64, 4, 16), (128, 4, 8), (32, 2, 16), (128, 8, 16)])
def test_dense_layouts_cover_the_tile(block_n, num_warps, block_m):
    """Every DENSE pair of the rows once, 16 contiguous ones a thread; every x pair once per warp."""
    lvd, lxd = hybrid_mma.dense_layouts(block_n, block_m, num_warps)
    assert sorted(elements(lvd)) == list(itertools.product(range(block_n), range(64)))
    assert lvd.reg_bases[:4] == [[0, 1], [0, 2], [0, 4], [0, 8]]
    counts = collections.Counter(elements(lxd))
    assert set(counts) == set(itertools.product(range(block_m), range(64))) and set(counts.values()) == {num_warps}


@pytest.mark.parametrize("has_dense, has_nv24", [(1, 1), (1, 0), (0, 1)])
def test_loop_stays_in_registers(has_dense, has_nv24):
    """No shuffle or spill; 16-byte loads of the tiles; one mma a 16 x 16 DENSE or 16 x 32 NV24 block and 8 x
    rows; only the formats present are compiled."""
    ops = compiled_loop("mma_hybrid", 64, 4, 16, has_dense, has_nv24)
    assert not {"LDL", "STL", "SHFL"} & {op.split(".")[0] for op in ops}
    assert ops["LDG.E.128"] == 8 * has_dense + 6 * has_nv24 + 2  # + x, two 16-byte loads a thread
    assert ops["HMMA.16816.F32.BF16"] == 16 * has_dense
    assert ops["HMMA.SP.16832.F32.BF16"] == 8 * has_nv24


def test_candidates_fit_a_tile_row():
    for config in hybrid_mma.candidates("hybrid", 16):
        assert config.block_n % (16 * config.num_warps) == 0 and hybrid_mma.TILE % config.block_n == 0


@pytest.mark.parametrize("k, tile, int4_tiles, dtype, runs", [
    (512, 128, False, torch.bfloat16, True), (500, 128, False, torch.bfloat16, False),
    (512, 64, False, torch.bfloat16, False), (512, 128, True, torch.bfloat16, False),
    (512, 128, False, torch.float16, False)])
def test_runs_128_tiles_of_dense_nv24_and_zero_in_x_dtype(k, tile, int4_tiles, dtype, runs):
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
    n, k = data.draw(st.integers(1, 1200)), 128 * data.draw(st.integers(1, 12))
    m = data.draw(st.integers(2, hybrid_mma.MAX_M))
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]))
    grid = random_grid(n, k, data.draw(st.sampled_from([0.0, 0.3, 1.0])), data.draw(st.integers(0, 99)))
    packed = make_case("hybrid", n, k, dtype, 128, data.draw(st.sampled_from([0.3, 1.0])), data.draw(
        st.integers(0, 99)), formats=grid, tile=128).pack().to("cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype) if data.draw(st.booleans()) else None
    config = data.draw(st.sampled_from([hybrid_mma.DEFAULTS["hybrid"], *hybrid_mma.candidates("hybrid", m)]))
    split = data.draw(st.sampled_from([None, 1, 3]))
    assert kernels.kernel_name(x, "hybrid", packed.tensors, packed.dims) == "mma"
    out = hybrid_mma.matmul(x, "hybrid", list(packed.tensors), packed.dims, bias, config, split_k=split)
    assert_matches_reference(out, x, packed, bias)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [2, 9, 16])
def test_every_candidate_on_a_llama_shape_gpu(m):
    packed = make_case("hybrid", 1024, 4096, torch.bfloat16, 128, 1.0, m, formats=random_grid(1024, 4096, 0.3, m),
                       tile=128).pack().to("cuda")
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    assert tuning.kernel_for("hybrid", x, packed.tensors)[0] == "mma"
    for config in hybrid_mma.candidates("hybrid", m):
        assert_matches_reference(hybrid_mma.matmul(x, "hybrid", list(packed.tensors), packed.dims, None, config),
                                 x, packed, None)
