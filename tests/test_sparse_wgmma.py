"""NV24 weights and HYBRID grids with NV24 tiles on Hopper's sparse warpgroup mma (`kernels.sparse_wgmma`): the
sm_90 code compiled on the CPU (no GPU needed), and on the GPU the results against the reference."""
import collections

import pytest
import torch
from hypothesis import given, strategies as st

from sparc.kernels import hybrid_wgmma, sparse_wgmma, tuning
from test_hybrid_mma import random_grid
from test_hybrid_wgmma import NV24, check_drawn_run, fake_x, grid_of
from test_int4_mma import sass_report
from test_kernels import GPU, assert_matches_reference, make_case

# block_m, block_n, stages, layout (0 NV24, 1 NV24_INT4, 2 HYBRID)
SHAPES = [(16, 64, 2, 0), (64, 64, 4, 0), (64, 128, 3, 0), (128, 128, 4, 0), (256, 64, 2, 0), (256, 128, 2, 0),
          (64, 128, 3, 2), (256, 128, 2, 2), (8, 128, 4, 2), (64, 128, 3, 1), (256, 128, 2, 1), (16, 64, 4, 1)]


@pytest.mark.parametrize("block_m, block_n, stages, layout", SHAPES)
def test_rings_sit_where_the_asm_reads_them(block_m, block_n, stages, layout):
    """The larger ring at the base of shared memory, the smaller right after it, then the others: the first
    constant offset the compiled kernel adds to the base is the larger ring's size, the second both rings'."""
    layout = sparse_wgmma.LAYOUTS[layout]
    assert sparse_wgmma.fits(block_m, block_n, stages, layout)
    weights, x = sparse_wgmma.buffer_bytes(block_m, block_n, stages, layout)[:2]
    offsets = sass_report("--shared-offsets", "wgmma_sparse", block_m, block_n, stages,
                          sparse_wgmma.LAYOUTS.index(layout))
    assert offsets[:2] == [max(weights, x), weights + x]
    assert sorted(sparse_wgmma.ring_offsets(block_m, block_n, stages, layout)) == [0, max(weights, x)]


@pytest.mark.parametrize("block_m, block_n, stages, layout", SHAPES)
def test_warp_specialized_loops(block_m, block_n, stages, layout):
    """The producer's loop asks the TMA engine for x's two boxes and an NV24 tile's values and metadata (a DENSE
    tile's two halves; NV24_INT4: the metadata and, DEPTH columns ahead, the int4 pairs); a grid's reads its tile
    entries, only NV24_INT4's reads data: the pairs (shared memory) and each half's scale and minimum (global),
    dequantizes each pair with one bf16x2 fused multiply-add and stores the values 16 bytes at a time. The
    consumer's reads its rows' metadata (two 16-byte shared loads), builds the 4 steps' words with one PRMT each
    and issues 4 sparse wgmma a warpgroup (a DENSE tile: 8 dense ones), waiting only for the column before.
    Nothing spills."""
    loops = [collections.Counter(loop) for loop in sass_report("--loops", "wgmma_sparse", block_m, block_n, stages,
                                                               layout)]
    producer = next(loop for loop in loops if loop["UTMALDG.2D"])
    consumer = next(loop for loop in loops if loop["HGMMA.SP.64"])
    assert producer["UTMALDG.2D"] == (6 if layout == 2 else 4)
    data = {op for op in producer if op.startswith(("LD", "ST"))}
    if layout == 1:
        pairs = block_n * 32 // (32 * sparse_wgmma.DEQUANTIZERS.value * 4)  # 4 bytes a thread, two values each
        assert producer["HFMA2.BF16_V2"] == 4 * pairs and producer["STS.128"] == pairs and "LDG.E.U16" in data
        assert data <= {"LDC", "LDG.E.U16", "LDS.128", "LDSM.16.M88.4", "STS.128"}
    else:  # a grid's tile entries only
        assert data <= ({"LDG.E.U8", "LDG.E.64", "LDC.64"} if layout == 2 else set())
    assert consumer["HGMMA.SP.64"] == 4 and consumer["LDS.128"] == 2 and consumer["PRMT"] == 4
    assert consumer["HGMMA.64"] == (8 if layout == 2 else 0)
    assert not {op for op in consumer if op.startswith(("LDG.E.128", "STG", "LDL", "STL"))}


@pytest.mark.parametrize("block_m, block_n, stages, layout", [(128, 64, 3, 0), (64, 128, 3, 1), (64, 128, 3, 2)])
def test_no_metadata_register_is_written_while_a_wgmma_sp_reads_it(block_m, block_n, stages, layout):
    """A wgmma.sp may read its metadata register while it runs, as it reads A from registers, and ptxas does
    not keep the next column's metadata out of it (where the consumer waited only for the column before the
    one in flight, the next column's PRMTs wrote the registers of the one in flight): no instruction of the
    consumer's loop writes a register that an unfinished wgmma.sp reads as its metadata."""
    assert sass_report("--metadata-in-flight", "wgmma_sparse", block_m, block_n, stages, layout) == []


@pytest.mark.parametrize("layout", sparse_wgmma.LAYOUTS)
def test_candidates_fit_shared_memory(layout):
    for m in (8, 16, 64, 100, 256):
        chosen = sparse_wgmma.candidates(m, layout)
        assert chosen and all(c.block_m <= max(8, 1 << (m - 1).bit_length()) for c in chosen)
        for c in chosen:
            sizes = sparse_wgmma.buffer_bytes(c.block_m, c.block_n, c.stages, layout)
            assert 2 <= c.stages and sum(sizes) <= sparse_wgmma.SHARED_BYTES and min(sizes[:2]) >= max(sizes[2:])


@pytest.mark.parametrize("m, k, nv24_tiles, runs", [(8, 512, True, True), (256, 512, True, True),
                                                    (7, 512, True, False), (64, 512, False, False),
                                                    (64, 504, True, False)])
def test_takes_grids_with_nv24_tiles_and_nv24_weights(m, k, nv24_tiles, runs, monkeypatch):
    """8 to 256 rows, K a multiple of 128 (NV24_INT4 of group 128: 256); grids only with NV24 tiles (others run
    `hybrid_wgmma`); its configs are then candidates of the mma kernel."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    weights = {"hybrid": make_case("hybrid", 200, k, torch.bfloat16, 128, 1.0, 0,
                                   formats=grid_of(200, k, 0.2, 0, nv24_tiles), tile=128).pack(),
               "nv24": make_case("nv24", 200, k, torch.bfloat16, 128, 0.5, 0).pack(),
               "nv24_int4": make_case("nv24_int4", 200, k, torch.bfloat16, 128, 0.5, 0).pack()}
    x = fake_x(m, k)
    assert sparse_wgmma.supports("hybrid", x, weights["hybrid"].tensors) == runs
    for layout in ("nv24", "nv24_int4"):
        assert sparse_wgmma.supports(layout, x, weights[layout].tensors) == (8 <= m and k % 128 == 0)
    for layout, packed in weights.items():
        more = sparse_wgmma.candidates_for(layout, x, packed.tensors)
        taken = sparse_wgmma.supports(layout, x, packed.tensors)
        assert more == (sparse_wgmma.candidates(m, layout) if taken else [])
        assert set(more) <= set(tuning.candidates("mma", layout, m, more))


@pytest.mark.gpu
@GPU
@given(data=st.data())
def test_matches_reference_gpu(data):
    """A drawn NV24 or NV24_INT4 weight or HYBRID grid with NV24 tiles (and DENSE and ZERO ones), run by the mma
    kernel with a drawn candidate config of this kernel (`check_drawn_run`)."""
    n, k = data.draw(st.integers(1, 1200)), 128 * data.draw(st.integers(1, 12))
    m, dtype = data.draw(st.integers(8, sparse_wgmma.MAX_M)), data.draw(st.sampled_from(sparse_wgmma.DTYPES))
    density, seed = data.draw(st.sampled_from([0.3, 1.0])), data.draw(st.integers(0, 99))
    layout = data.draw(st.sampled_from(sparse_wgmma.LAYOUTS))
    if layout != "hybrid":
        group = data.draw(st.sampled_from(hybrid_wgmma.GROUPS))
        k = -(-k // (2 * group)) * 2 * group if layout == "nv24_int4" else k
        packed = make_case(layout, n, k, dtype, group, density, seed).pack().to("cuda")
    else:
        grid = random_grid(n, k, data.draw(st.sampled_from([0.0, 0.3, 0.7])), seed)
        grid[0, 0] = NV24
        packed = make_case("hybrid", n, k, dtype, 128, density, seed, formats=grid, tile=128).pack().to("cuda")
    assert sparse_wgmma.supports(layout, torch.empty(m, k, device="cuda", dtype=dtype), packed.tensors)
    check_drawn_run(data, layout, packed, m, dtype, lambda rows: sparse_wgmma.candidates(rows, layout))


@pytest.mark.gpu
@pytest.mark.parametrize("layout, config", [(layout, config) for layout in sparse_wgmma.LAYOUTS for config in (
    sparse_wgmma.Config(64 if layout == "hybrid" else 128, 128, 3 if layout == "hybrid" else 4, 1),
    sparse_wgmma.Config(16, 64, 3, 1))], ids=str)
def test_rows_past_n_gpu(layout, config):
    """45 weight rows in programs of 64 or 128: the rows past N (zero metadata from the TMA engine, which is no
    valid sparsity metadata) leave the others' outputs right, over 4 columns."""
    grid = random_grid(45, 512, 0.3, 0) if layout == "hybrid" else None
    if grid is not None:
        grid[0, 0] = NV24
    packed = make_case(layout, 45, 512, torch.bfloat16, 128, 1.0, 0, formats=grid, tile=128).pack().to("cuda")
    x = torch.randn(119, 512, device="cuda", dtype=torch.bfloat16)
    out = sparse_wgmma.matmul(x, layout, packed.tensors, packed.dims, None, config)
    assert_matches_reference(out, x, packed, None)


AXES = {"columns": lambda c: (c.block_n, 4096, c.block_m, 1), "rows": lambda c: (64 * c.block_n, 128, c.block_m, 1),
        "x rows": lambda c: (c.block_n, 128, 2 * c.block_m, 1), "slices": lambda c: (c.block_n, 512, c.block_m, 4)}


@pytest.mark.gpu
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("config", [sparse_wgmma.Config(bm, bn, 3, 0) for bm, bn in
                                    [(16, 64), (128, 64), (16, 128), (128, 128)]], ids=str)
def test_each_grid_axis_gpu(axis, config):
    """NV24, one axis of the grid at a time: one program over 32 columns, 64 programs of weight rows, 2 of x
    rows, or 4 split-K slices of one program's rows."""
    n, k, m, split = AXES[axis](config)
    packed = make_case("nv24", n, k, torch.bfloat16, 128, 1.0, 0).pack().to("cuda")
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    out = sparse_wgmma.matmul(x, "nv24", packed.tensors, packed.dims, None, config, split_k=split)
    assert_matches_reference(out, x, packed, None)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", sparse_wgmma.LAYOUTS)
def test_every_candidate_on_a_llama_shape_gpu(layout):
    grid = random_grid(4096, 4096, 0.3, 0) if layout == "hybrid" else None
    packed = make_case(layout, 4096, 4096, torch.bfloat16, 128, 1.0, 0, formats=grid, tile=128).pack().to("cuda")
    x = torch.randn(256, 4096, device="cuda", dtype=torch.bfloat16)
    for config in sparse_wgmma.candidates(256, layout):
        out = sparse_wgmma.matmul(x, layout, packed.tensors, packed.dims, None, config)
        assert_matches_reference(out, x, packed, None)
