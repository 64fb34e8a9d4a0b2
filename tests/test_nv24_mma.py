"""NV24 and NV24_INT4 at small M on the sparse tensor cores (`kernels.nv24_mma`): the layouts, the sm_90 code compiled
on the CPU (no GPU needed), and on the GPU the results against the reference."""
import collections
import itertools
import types

import pytest
import torch
from hypothesis import given, strategies as st

from sparc import kernels
from sparc.kernels import nv24_mma, tuning
from test_int4_mma import compiled_loop, elements
from test_kernels import GPU, assert_matches_reference, make_case

CONFIGS = [(64, 4, 16, 1), (128, 4, 16, 1), (32, 2, 8, 1), (256, 8, 16, 1), (64, 2, 8, 1), (128, 8, 64, 1),
           (64, 8, 64, 2), (64, 4, 64, 2), (64, 8, 64, 4), (32, 2, 32, 2), (128, 8, 64, 2)]  # n, warps, m, warps_m


@pytest.mark.parametrize("block_n, num_warps, block_m, warps_m", CONFIGS)
def test_layouts_cover_the_blocks(block_n, num_warps, block_m, warps_m):
    """Every value pair and metadata word (once per lane of a quad) once per warp along M; every x pair of a step
    once per warp along N, 4 contiguous ones a thread; every x pair of a chunk once as the program loads it."""
    lv, lm, _, _ = nv24_mma.operand_layouts(block_n, block_m, num_warps, warps_m=warps_m)
    assert_covers(lv, [block_n, 32], warps_m)
    assert_covers(lm, [block_n, 4, 4], warps_m)
    ls = nv24_mma.step_layout(block_m, num_warps, warps_m)
    assert_covers(ls, [block_m, 16], num_warps // warps_m)
    assert ls.reg_bases[:2] == [[0, 1], [0, 2]]
    assert_covers(nv24_mma.x_layout(block_m, num_warps), [block_m, 64], 1)


def assert_covers(layout, shape, times):
    counts = collections.Counter(elements(layout))
    assert set(counts) == set(itertools.product(*map(range, shape))) and set(counts.values()) == {times}


@pytest.mark.parametrize("block_n, num_warps, block_m, warps_m", CONFIGS)
def test_a_thread_loads_32_contiguous_bytes_of_values_and_16_of_metadata(block_n, num_warps, block_m, warps_m):
    lv, lm, _, _ = nv24_mma.operand_layouts(block_n, block_m, num_warps, warps_m=warps_m)
    assert lv.reg_bases[:3] == [[0, 1], [0, 2], [0, 4]]
    assert lm.reg_bases[:2] == [[0, 0, 1], [0, 0, 2]]
    lq = nv24_mma.operand_layouts(block_n, block_m, num_warps, quantized=True, warps_m=warps_m)[0]
    assert_covers(lq, [block_n, 8], warps_m)
    assert lq.reg_bases[0] == [0, 1]  # NV24_INT4: 8 bytes of q, the groups of the same 32 inputs


@pytest.mark.parametrize("block_n, num_warps, block_m, warps_m", CONFIGS)
def test_loop_stays_in_registers(block_n, num_warps, block_m, warps_m):  # NV24
    """Reaching the operand layout only renames registers: the K loop has no shuffle or spill; it loads values
    and metadata 16 bytes at a time (evict-first), x 4 bytes at a time into shared memory (16-byte stores, two
    barriers a chunk) and from there 16 bytes an m-tile and step, and issues one mma.sp per 16 rows, 8 x rows
    and 32 inputs."""
    ops = compiled_loop("mma_nv24", block_n, num_warps, block_m, 0, warps_m)
    assert not {"LDL", "STL", "SHFL"} & {op.split(".")[0] for op in ops}
    tiles_a_warp, m_tiles_a_warp = block_n * warps_m // (16 * num_warps), block_m // 8 // warps_m
    x_a_thread = block_m * 64 // (32 * num_warps)
    assert ops["LDG.E.EF.128"] == 6 * tiles_a_warp
    assert ops["LDG.E"] == x_a_thread and ops["STS.128"] == x_a_thread // 4
    assert ops["LDS.128"] == 4 * m_tiles_a_warp and "LDS" not in ops and ops["BAR.SYNC.DEFER_BLOCKING"] == 2
    assert ops["HMMA.SP.16832.F32.BF16"] == 4 * tiles_a_warp * m_tiles_a_warp


def test_metadata_rows_of_bytes_load_each_word_as_4_bytes():
    """Where the metadata rows are no whole words, each 16-byte load of a thread's 4 metadata words of a row
    becomes 16 byte loads; the values' 16-byte loads, the shared memory traffic and the mma stay, nothing
    spills."""
    words = compiled_loop("mma_nv24", 64, 4, 16, 0, 1, 0, 0)
    meta_bytes = compiled_loop("mma_nv24", 64, 4, 16, 0, 1, 0, 1)
    assert not {"LDL", "STL"} & {op.split(".")[0] for op in meta_bytes}
    metadata_loads = words["LDG.E.EF.128"] - meta_bytes["LDG.E.EF.128"]
    assert metadata_loads == 2 and meta_bytes["LDG.E.EF.U8"] == 16 * metadata_loads  # rows g and g + 8
    for op in ("LDS.128", "STS.128", "HMMA.SP.16832.F32.BF16"):
        assert meta_bytes[op] == words[op], op


@pytest.mark.parametrize("block_n, num_warps, block_m, group, warps_m",
                         [(64, 4, 16, 128, 1), (64, 2, 16, 32, 1), (64, 4, 8, 64, 1), (64, 8, 64, 128, 2)])
def test_nv24_int4_loop_dequantizes_in_registers(block_n, num_warps, block_m, group, warps_m):
    """NV24_INT4: 8 bytes of q a row and thread, and a kept pair costs one PRMT, one subtraction and one FMA."""
    ops = compiled_loop("mma_nv24", block_n, num_warps, block_m, group, warps_m)
    assert not {"LDL", "STL", "SHFL"} & {op.split(".")[0] for op in ops}
    tiles_a_warp = block_n * warps_m // (16 * num_warps)
    assert ops["LDG.E.EF.64"] == 2 * tiles_a_warp and ops["HFMA2.BF16_V2"] == 16 * tiles_a_warp
    assert ops["HMMA.SP.16832.F32.BF16"] == 4 * tiles_a_warp * block_m // 8 // warps_m


def test_capped_candidates_keep_their_registers():
    """NV24's register-capped candidates (two programs an SM) compile without spilling or shuffling; NV24_INT4
    has none."""
    assert not any(c.max_registers for c in nv24_mma.candidates("nv24_int4", 64))
    shapes = {(c.block_n, c.num_warps, c.warps_m, c.max_registers)
              for c in nv24_mma.candidates("nv24", 64) if c.max_registers}
    assert shapes
    for block_n, num_warps, warps_m, registers in shapes:
        ops = compiled_loop("mma_nv24", block_n, num_warps, 64, 0, warps_m, registers)
        assert not {"LDL", "STL", "SHFL"} & {op.split(".")[0] for op in ops}
        assert ops["HMMA.SP.16832.F32.BF16"] == 4 * (block_n * warps_m // (16 * num_warps)) * 8 // warps_m


@pytest.mark.parametrize("m", [16, 64, 128])
def test_candidates_fit_the_warps(m):
    for config in nv24_mma.candidates("nv24", m):
        assert config.block_n % (16 * config.num_warps // config.warps_m) == 0
        assert min(64, m) // 8 % config.warps_m == 0


@pytest.mark.parametrize("m, runs", [(64, True), (128, True), (129, False)])
def test_runs_to_128_rows_in_programs_of_64(m, runs, monkeypatch):
    """Past 128 rows only on Hopper (`hybrid_wgmma`, tests/test_hybrid_wgmma.py)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    x = types.SimpleNamespace(shape=(m, 4096), is_cuda=True, dtype=torch.bfloat16, device="cuda")  # what's read
    tensors = [torch.empty(0, 2048, dtype=torch.bfloat16), torch.empty(0, 512, dtype=torch.uint8)]
    assert nv24_mma.supports("nv24", x, tensors) == runs
    assert nv24_mma.x_rows_for(m, nv24_mma.MAX_M) == min(64, 1 << (m - 1).bit_length())


@pytest.mark.parametrize("layout, k, stored, runs", [
    ("nv24", 4096, torch.bfloat16, True), ("nv24", 4090, torch.bfloat16, True), ("nv24", 3000, torch.bfloat16, True),
    ("nv24", 4096 + 40, torch.bfloat16, True), ("nv24", 4096, torch.float16, False),
    ("nv24_int4", 3000, torch.bfloat16, True), ("nv24_int4", 4096, torch.float16, False)])
def test_runs_at_any_k_in_x_dtype(layout, k, stored, runs):
    """NV24 rows whose metadata are no whole words (K padded to 8 no multiple of 32) run too, read bytewise."""
    x = types.SimpleNamespace(shape=(16, k), is_cuda=True, dtype=torch.bfloat16)  # what `supports` reads of x
    tensors = [torch.empty(0, dtype=stored)] * (4 if layout == "nv24_int4" else 2)
    assert nv24_mma.supports(layout, x, tensors) == runs


@pytest.mark.parametrize("layout, dtype, runs", [
    ("nv24", torch.float16, True), ("nv24", torch.bfloat16, False), ("nv24_int4", torch.float16, True),
    ("nv24_int4", torch.bfloat16, False)])
def test_one_row_runs_here_in_fp16_only(layout, dtype, runs):
    """At M = 1 the decode kernels run bf16; fp16 would fall back to slower kernels."""
    x = types.SimpleNamespace(shape=(1, 4096), is_cuda=True, dtype=dtype)  # what `supports` reads of x
    tensors = [torch.empty(0, dtype=dtype)] * (4 if layout == "nv24_int4" else 2)
    assert nv24_mma.supports(layout, x, tensors) == runs


@pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 16])
def test_as_words_keeps_every_byte_behind_a_real_pointer(size):
    """A buffer of less than one word (a 1 x 3 NV24 weight's metadata is 1 byte) must not become an empty view,
    whose data pointer is null: the kernel reads its bytes through it."""
    buffer = torch.arange(1, size + 1, dtype=torch.uint8).reshape(1, -1) if size else torch.empty(0, dtype=torch.uint8)
    words = nv24_mma.as_words(buffer)
    assert words.dtype == torch.int32 and words.data_ptr() != 0
    if size >= 4:  # a view of the whole words; the kernel reads the bytes of a last partial word past it
        assert words.data_ptr() == buffer.data_ptr() and words.numel() == size // 4
        assert torch.equal(words.view(torch.uint8), buffer.reshape(-1)[: size // 4 * 4])
    else:  # a copy, zero-padded to 4 words
        assert words.numel() == 4 and torch.equal(words.view(torch.uint8)[:size], buffer.reshape(-1))
        assert not words.view(torch.uint8)[size:].any()


@pytest.mark.gpu
@pytest.mark.parametrize("n, k", [(1, 3), (1, 24), (2, 8), (3, 5)])
@pytest.mark.parametrize("split", [None, 1, 4])
def test_a_weight_of_less_than_one_metadata_word_gpu(n, k, split):
    """Hypothesis found a 1 x 3 fp16 weight at M = 2 that read its metadata through a null pointer."""
    packed = make_case("nv24", n, k, torch.float16, 0, 1.0, k).pack().to("cuda")
    assert packed.tensors[1].numel() < 4
    x = torch.randn(2, k, device="cuda", dtype=torch.float16)
    bias = torch.randn(n, device="cuda", dtype=torch.float16)
    assert kernels.kernel_name(x, "nv24", packed.tensors, packed.dims) == "mma"
    out = kernels.triton_matmul(x, "nv24", packed.tensors, packed.dims, bias, split_k=split)
    assert_matches_reference(out, x, packed, bias)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nv24", "nv24_int4"])
@GPU
@given(data=st.data())
def test_matches_reference_gpu(layout, data):
    n = data.draw(st.integers(1, 2500))
    k = 32 * data.draw(st.integers(1, 80)) - data.draw(st.integers(0, 31))
    m = data.draw(st.integers(1, nv24_mma.MOST_M))
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]))
    group = data.draw(st.sampled_from([32, 64, 128])) if layout == "nv24_int4" else 0
    density = data.draw(st.sampled_from([0.3, 1.0]))
    packed = make_case(layout, n, k, dtype, group, density, data.draw(st.integers(0, 99))).pack().to("cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype) if data.draw(st.booleans()) else None
    config = data.draw(st.sampled_from([nv24_mma.default(layout, m), *nv24_mma.candidates(layout, m)]))
    split = data.draw(st.sampled_from([None, 1, 3]))
    one_row_here = dtype == torch.float16  # the decode kernels take bf16
    # the kernel the product dispatches to (past 64 rows the tuned config of the nearest shape may be the rebuild)
    assert tuning.kernel_for(layout, x, packed.tensors)[0] == ("mma" if m > 1 or one_row_here else "decode")
    out = nv24_mma.matmul(x, layout, list(packed.tensors), packed.dims, bias, config, split_k=split)
    assert_matches_reference(out, x, packed, bias)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nv24", "nv24_int4"])
@pytest.mark.parametrize("m", [2, 9, 16, 40, 64, 100])
def test_every_candidate_on_a_llama_shape_gpu(layout, m):
    packed = make_case(layout, 1024, 4096, torch.bfloat16, 128, 1.0, m).pack().to("cuda")
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    assert tuning.kernel_for(layout, x, packed.tensors)[0] == "mma"
    for config in nv24_mma.candidates(layout, m):
        assert_matches_reference(nv24_mma.matmul(x, layout, list(packed.tensors), packed.dims, None, config),
                                 x, packed, None)
