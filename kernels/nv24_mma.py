"""NV24 and NV24_INT4 at small M (2 to 128 rows of x; in fp16 from 1) on the GPU: the stored 2:4 values are
the A operand of the sparse tensor cores (mma.sp m16n8k32, inline PTX: Gluon has no sparse mma) and the stored
metadata their sparsity metadata. Nothing is expanded: an NV24 weight costs its 1.125 bytes and about one
instruction per 16 of them; NV24_INT4's kept values are dequantized into the A registers first (one PRMT, one
subtraction and one FMA a pair, `kept_pair`).

As in `int4_mma` the product is transposed, out.T = W @ x.T, and K is renumbered inside each 128-input chunk so
that every thread loads contiguous runs. A chunk of a row is 32 groups of 4 inputs, each group stored as one
int32 pair of kept values (NV24_INT4: one byte) and one nibble of metadata (`nv24`). The chunk is 4 mma steps of
32 inputs (8 groups each). Stored group q = 8 c + 2 s + b is group h = 4 b + c of step s: so thread c of a quad
(lane = 4 g + c) holds, for rows g and g + 8, the pairs the m16n8k32 A fragment wants in its registers (groups c
and c + 4 of each step) as its 8 stored groups 8 c .. 8 c + 7: 32 contiguous bytes (NV24_INT4: 8). A sum over k
does not depend on its order, and x follows the same renumbering: B register i of thread c at step s is x's
pair 32 (i % 2) + 16 (c // 2) + 8 (s // 2) + 4 (s % 2) + 2 (i // 2) + c % 2. Those are 4-byte pieces of 8 x
rows an instruction, so x goes through shared memory, once a program and chunk: `x_to_steps` stores each step's
pairs of a row in the order (c, i), so that thread c's 4 B registers are 16 contiguous bytes, and right before
each step every warp reads its B registers back, one 16-byte load an m-tile (the compiler adds a barrier before
the store and one before the loads). Only one step of x is live in registers, so 64 x rows fit. x is loaded from
global memory in the layout whose 16-byte shared stores fill all banks (`x_layout`). Read by every warp from L1
instead, x held the kernel to about 70% of the bandwidth of a shared-memory version.

The metadata of a step (sparsity selector 0) comes from lanes c = 0 and 1: lane c holds the nibbles of groups
4 c .. 4 c + 3, row g in bits 0-15 and row g + 8 in bits 16-31. Those are nibble c of byte s of each of the
row's 4 metadata words of the chunk; every lane of a quad loads its two rows' 16 bytes (one load, one sector).

The tensors the instruction takes are built per thread in one layout, LD, shape (n-tiles, m-tiles, g, c, r1,
r0), in which the 4 registers (r0, r1) of a tile are the instruction's 4 registers of A, B and the accumulator
(`mma_sp`, 4 elements an inline-asm call, A and the metadata broadcast over m-tiles, B over n-tiles). Loads
land in layouts chosen so that reaching LD only renames registers. Padding groups keep the valid nibble 0b0100
and zero values; masked loads do the same. Program (pid, pid_k) owns BLOCK_N weight rows, BLOCK_M x rows and
the pid_k-th of SPLIT_K slices of K, with the next chunk's loads issued before the current one is multiplied
(evict-first: a weight is read once, and L2 then keeps x, which every program reads); the epilogue is
`int4_mma`'s. Its warps split the rows (16 a warp tile) and, past 16 x rows, also the x rows
(`Config.warps_m`): a warp's x reads from shared memory are then shared by more weight rows. Gluon does not
run under TRITON_INTERPRET: the CPU keeps the tile kernel; tests/test_nv24_mma.py compiles this one for sm_90
on any machine.
"""
from __future__ import annotations

import dataclasses
import itertools

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from . import hybrid_wgmma, rebuild, sparse_wgmma
from .gluon_decode import x_as_pairs
from .int4_mma import bits, packed_twice, split_for, store_transposed, x_rows_for
from .pdl import release_dependents, wait_for_inputs
from .tiling import Tiling, launch, register_cap

MAX_M = 64  # x rows a program
# past MAX_M rows programs split x's rows; at 128 rows up to 1.9x faster than the rebuild and cuBLAS, at 256
# slower (RESULTS.md)
MOST_M = 128
DTYPES = (torch.bfloat16, torch.float16)
BLOCK_K = 128
STREAM = gl.constexpr("evict_first")  # weights are read once: L2 keeps x, which every program reads
NO_INPUTS = gl.constexpr(0x44444444)  # every nibble 0b0100: groups that keep inputs 0 and 1 (their values are zero)
NO_INPUTS_BYTE = gl.constexpr(0x44)


@dataclasses.dataclass(frozen=True)
class Config:
    """Weight rows per program (a multiple of 16 * the warps along N), split-K slices (0: as many as fill the
    GPU), warps, how many of them split the x rows (the rest split the weight rows), and the registers a thread
    may use (0: as many as the compiler takes)."""
    block_n: int
    split_k: int = 0
    num_warps: int = 4
    warps_m: int = 1
    max_registers: int = 0


DEFAULTS = {"nv24": Config(64, 0, 4), "nv24_int4": Config(64, 0, 4)}
LARGE_M_DEFAULT = Config(128, 0, 8, 2)  # past 16 x rows: two row tiles and half the x rows a warp


def default(layout: str, m: int):
    """Past MOST_M rows (only the Hopper kernel's tuned configs run there) the rebuild, as before that kernel."""
    if m > MOST_M:
        return rebuild.CONFIG
    return DEFAULTS[layout] if m <= 16 else LARGE_M_DEFAULT


def supports(layout: str, x2d: torch.Tensor, tensors=None) -> bool:
    """NV24 and NV24_INT4 products of 2 to MOST_M rows of bf16 or fp16 x on CUDA, values (scales) stored in x's
    dtype (metadata rows of whole words or, NV24 where K padded to 8 is no multiple of 32, read bytewise). Also
    one row of fp16 x, where the decode kernels fall back to slower ones (NV24 to the tile kernel, NV24_INT4 to
    its Triton decode kernel: RESULTS.md). Past MOST_M rows, the NV24 and NV24_INT4 weights `hybrid_wgmma` takes
    (its configs are candidates here)."""
    if x2d.shape[0] > MOST_M:
        return hybrid_wgmma.supports(layout, x2d, tensors)
    fewest = 1 if x2d.dtype == torch.float16 else 2
    if layout not in DEFAULTS or not (fewest <= x2d.shape[0] <= MOST_M and x2d.is_cuda and x2d.dtype in DTYPES):
        return False
    stored = None if tensors is None else tensors[1 if layout == "nv24_int4" else 0].dtype
    return stored in (None, x2d.dtype)


def candidates(layout: str, m: int) -> list[Config]:
    """Past 16 x rows the warps also split the x rows: a warp that multiplies every x row by its weight rows
    reads all of x from shared memory for every chunk (warps along N, warps along M, row tiles a warp); NV24 also
    with 8 warps in 128 registers a thread."""
    if m > 16:
        tilings = [(8, 1, 1), (4, 2, 1), (2, 2, 2), (4, 2, 2), (2, 4, 2)]
        # NV24 in 128 registers: two programs an SM (NV24_INT4's dequantization would spill)
        capped = [Config(128, split, 8, 1, 128) for split in (0, 2, 4)] if layout == "nv24" else []
        return [Config(16 * wn * r, split, wn * wm, wm) for (wn, wm, r), split in
                itertools.product(tilings, (0, 2, 4)) if wm <= x_rows_for(m, MAX_M) // 8] + capped
    return [Config(16 * w * r, split, w) for w, r, split in itertools.product((2, 4), (1, 2), (0, 2, 4))]


def operand_layouts(block_n: int, block_m: int, num_warps: int, quantized: bool = False, warps_m: int = 1):
    """(LV over the values as int32 pairs (BLOCK_N, 32 of a chunk), LM over the metadata words (BLOCK_N, 4 lanes
    of a quad, 4 words of a chunk), LD over the operands of `mma_sp` (n-tiles, m-tiles, g, c, r1, r0), the mma
    layout of the result (BLOCK_N, BLOCK_M)). The low warp bits split the m-tiles (warps_m of them), the high
    ones the row tiles: LV and LM repeat over the first."""
    w, m_tiles = num_warps // warps_m, block_m // 8
    per_warp = block_n // (16 * w)
    rows = [[16 * w << i] for i in bits(per_warp)]
    warps = [[0]] * len(bits(warps_m)) + [[16 << i] for i in bits(w)]
    quad = [[1], [2], [4]]  # lane bits 2-4: g, rows 1, 2, 4
    lv = gl.DistributedLinearLayout(  # NV24_INT4: the q words (BLOCK_N, 8), 2 of them (8 bytes) a thread
        reg_bases=([[0, 1]] if quantized else [[0, 1], [0, 2], [0, 4]]) + [[8, 0]] + [r + [0] for r in rows],
        lane_bases=([[0, 2], [0, 4]] if quantized else [[0, 8], [0, 16]]) + [q + [0] for q in quad],
        warp_bases=[r + [0] for r in warps], block_bases=[], shape=[block_n, 8 if quantized else 32])
    lm = gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 1], [0, 0, 2], [8, 0, 0]] + [r + [0, 0] for r in rows],
        lane_bases=[[0, 1, 0], [0, 2, 0]] + [q + [0, 0] for q in quad], warp_bases=[r + [0, 0] for r in warps],
        block_bases=[], shape=[block_n, 4, 4])
    # (n-tile, m-tile, g, c, r1, r0): registers r0, r1, m-tiles, then a warp's further n-tiles
    ld = gl.BlockedLayout(size_per_thread=[1, m_tiles // warps_m, 1, 1, 2, 2], threads_per_warp=[1, 1, 8, 4, 1, 1],
                          warps_per_cta=[w, warps_m, 1, 1, 1, 1], order=[5, 4, 3, 2, 1, 0])
    mma = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[w, warps_m], instr_shape=[16, 8])
    return lv, lm, ld, mma


def step_layout(block_m: int, num_warps: int, warps_m: int = 1):
    """LS over one step of x in `x_to_steps`' buffer (BLOCK_M, 16): thread (g, c) holds the 4 contiguous pairs
    (r1, r0) of row 8 t + g at 4 c, for each m-tile t of its warp's (the warps along N read the same ones)."""
    tiles = block_m // 8 // warps_m
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2]] + [[8 << i, 0] for i in bits(tiles)],
        lane_bases=[[0, 4], [0, 8], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[8 * tiles << i, 0] for i in bits(warps_m)] + [[0, 0] for _ in bits(num_warps // warps_m)],
        block_bases=[], shape=[block_m, 16])


def x_layout(block_m: int, num_warps: int, in_registers=(32, 2), in_lanes=(1, 16), step_lanes=(4, 8)):
    """LG over x's pairs (BLOCK_M, 64 of a chunk) as the program loads them for `x_to_steps`: a thread's 4 pairs
    (those at pair bits in_registers) are the 4 registers (r1, r0) that one 16-byte store puts side by side, and
    the 8 lanes of a quarter warp cover c (pair bits in_lanes) and row bit 0, so that their stores fill all 32
    banks (4-byte global loads, merged in L1; 16-byte ones where the registers are pair bits 0 and 1); the other
    lanes cover the remaining pair bits, step_lanes."""
    row_bits = list(bits(block_m))[1:]  # row bit 0 is a lane's
    warp_rows = [[1 << b, 0] for b in row_bits[:len(bits(num_warps))]]
    return gl.DistributedLinearLayout(
        reg_bases=[[0, in_registers[0]], [0, in_registers[1]]] + [[1 << b, 0] for b in row_bits[len(warp_rows):]],
        lane_bases=[[0, in_lanes[0]], [0, in_lanes[1]], [1, 0], [0, step_lanes[0]], [0, step_lanes[1]]],
        warp_bases=warp_rows + [[0, 0]] * (len(bits(num_warps)) - len(warp_rows)), block_bases=[],
        shape=[block_m, 64])


@gluon.jit
def steps_of(t):
    """The 4 mma steps of a chunk from t (..., 2 s1, 2 s0), each t[..., s1, s0], in the order s = 0, 2, 1, 3:
    any order serves, as long as every operand is split the same way."""
    low, high = gl.split(t)  # s0
    s0, s2 = gl.split(low)
    s1, s3 = gl.split(high)
    return s0, s2, s1, s3


@gluon.jit
def operand(t, LD: gl.constexpr):
    """t, whose dims are LD's with size 1 where the operand repeats, in LD: registers renamed (broadcast by
    `mma_sp`)."""
    return gl.convert_layout(t, LD)


@gluon.jit
def a_steps(values, LD: gl.constexpr):
    """The A registers (n-tile, 1, g, c, r1, r0) of the 4 steps from the chunk's pairs (BLOCK_N, 32 groups)."""
    NT: gl.constexpr = values.shape[0] // 16
    v = gl.reshape(values, [NT, 2, 8, 4, 2, 2, 2])  # (n-tile, row bit 3: r0, g, c, s1, s0, b: r1)
    s0, s1, s2, s3 = steps_of(gl.permute(v, [0, 2, 3, 6, 1, 4, 5]))
    shape: gl.constexpr = [NT, 1, 8, 4, 2, 2]
    return (operand(gl.reshape(s0, shape), LD), operand(gl.reshape(s1, shape), LD),
            operand(gl.reshape(s2, shape), LD), operand(gl.reshape(s3, shape), LD))


@gluon.jit
def e_steps(words, LD: gl.constexpr):
    """The metadata registers (n-tile, 1, g, c, 1, 1) of the 4 steps from the chunk's words (BLOCK_N, 4 lanes
    c, 4 words). Lane c takes nibble c % 2 of byte s of each word: groups 4 (c % 2) .. + 3 of step s."""
    c = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, words.type.layout)))
    mine = words >> gl.expand_dims(gl.expand_dims(4 * (c & 1), 0), 2)
    v = gl.reshape(mine, [mine.shape[0], 4, 2, 2, 1])  # (row, c, word bit 1, word bit 0, 1)
    t = gl.join(gl.join(v, v >> 16), gl.join(v >> 8, v >> 24))  # (..., s1, s0): byte s at the bottom
    s0, s1, s2, s3 = steps_of(gl.reshape(t, [mine.shape[0], 4, 2, 2, 2, 2]))
    return e_operand(s0, LD), e_operand(s1, LD), e_operand(s2, LD), e_operand(s3, LD)


@gluon.jit
def e_operand(mine, LD: gl.constexpr):
    """The low nibble of each word (row, c, word bit 1, word bit 0): words 0-3 in nibbles 0-3, row g in bits
    0-15 and g + 8 in 16-31."""
    NT: gl.constexpr = mine.shape[0] // 16
    even, odd = gl.split(mine & 0xF)
    w0, w2 = gl.split(even)
    w1, w3 = gl.split(odd)
    half = w0 | (w1 << 4) | (w2 << 8) | (w3 << 12)
    low, high = gl.split(gl.permute(gl.reshape(half, [NT, 2, 8, 4]), [0, 2, 3, 1]))  # rows g and g + 8
    return operand(gl.reshape(low | (high << 16), [NT, 1, 8, 4, 1, 1]), LD)


@gluon.jit
def mma_sp(acc, a, b, e, dtype: gl.constexpr):
    """acc + the 2:4 A times B of one m16n8k32 step for every (n-tile, m-tile): 4 registers each in LD, a, b and
    e broadcast over the dims where they have size 1."""
    if dtype == gl.bfloat16:
        return gl.inline_asm_elementwise(
            "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
            "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9, $10, $11}, {$12, $13, $14, $15}, $16, 0x0;",
            "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f,r,r,r,r", [a, b, acc, e], dtype=gl.float32, is_pure=True, pack=4)
    return gl.inline_asm_elementwise(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
        "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9, $10, $11}, {$12, $13, $14, $15}, $16, 0x0;",
        "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f,r,r,r,r", [a, b, acc, e], dtype=gl.float32, is_pure=True, pack=4)


@gluon.jit
def accumulate_steps(acc, values, words, steps, dtype: gl.constexpr, LS: gl.constexpr, LD: gl.constexpr):
    """acc + one chunk whose x `x_to_steps` put in shared memory: 4 steps of mma_sp, each reading its B
    registers from there (16 bytes an m-tile), so that no more than one step of x is live in registers."""
    a0, a1, a2, a3 = a_steps(values, LD)
    e0, e1, e2, e3 = e_steps(words, LD)
    acc = mma_sp(acc, a0, b_step(steps, 0, LS, LD), e0, dtype)  # steps_of's order: 0, 2, 1, 3
    acc = mma_sp(acc, a1, b_step(steps, 2, LS, LD), e1, dtype)
    acc = mma_sp(acc, a2, b_step(steps, 1, LS, LD), e2, dtype)
    return mma_sp(acc, a3, b_step(steps, 3, LS, LD), e3, dtype)


@gluon.jit
def x_to_steps(steps, x):
    """x's pairs (BLOCK_M, 64) of a chunk into shared memory (4 steps x BLOCK_M rows, 16): step s's pairs of a
    row, ordered (c, r1, r0), the B registers of thread c (the module docstring gives the pair each one holds)."""
    BM: gl.constexpr = x.shape[0]
    v = gl.reshape(x, [BM, 2, 2, 2, 2, 2, 2])  # (row, r0, c1, s1, s0, r1, c0)
    steps.store(gl.reshape(gl.permute(v, [3, 4, 0, 2, 6, 5, 1]), [4 * BM, 16]))


@gluon.jit
def b_step(steps, s: gl.constexpr, LS: gl.constexpr, LD: gl.constexpr):
    """The B registers (1, m-tile, g, c, r1, r0) of step s, read from `x_to_steps`' buffer in LS."""
    BM: gl.constexpr = steps.shape[0] // 4
    x = steps.slice(s * BM, BM).load(LS)
    return operand(gl.reshape(x, [1, BM // 8, 8, 4, 2, 2]), LD)


@gluon.jit
def weight_loads(values_ptr, scales_ptr, mins_ptr, meta_ptr, value_at, word_at, row_at, chunk, value_ok, word_ok,
                 row_values, row_words, row_groups, GROUP: gl.constexpr, META_BYTES: gl.constexpr):
    """(values, scales, minimums, metadata words) of chunk `chunk`, zero values and NO_INPUTS words past the row or
    where not value_ok (BLOCK_N, 1) and word_ok (BLOCK_N, 1, 1). META_BYTES: the metadata rows are row_words bytes,
    not whole words (word_at from `byte_addresses`), and each word is read as its 4 bytes. NV24 (GROUP 0): the
    pairs (BLOCK_N, 32); NV24_INT4: the q words (BLOCK_N, 8), and each word's quantization group's scale and
    minimum, each packed twice in an int32."""
    LV: gl.constexpr = value_at.type.layout
    per_chunk: gl.constexpr = value_at.shape[1]  # 32 pairs or 8 q words
    q = gl.arange(0, per_chunk, layout=gl.SliceLayout(0, LV))
    ok = value_ok & gl.expand_dims(chunk * per_chunk + q < row_values, 0)
    values = gl.load(values_ptr + value_at + chunk * per_chunk, mask=ok, other=0, eviction_policy=STREAM)
    scales = 0
    mins = 0
    if GROUP:  # q word w covers inputs 16 w .. 16 w + 15 of the chunk, all in one group of 2 GROUP inputs
        sm_at = row_at + gl.expand_dims((chunk * 128 + 16 * q) // (2 * GROUP), 0)
        ok = value_ok & gl.expand_dims((chunk * 128 + 16 * q) // (2 * GROUP) < row_groups, 0)
        scales = packed_twice(gl.load(scales_ptr + sm_at, mask=ok, other=0, eviction_policy=STREAM))
        mins = packed_twice(gl.load(mins_ptr + sm_at, mask=ok, other=0, eviction_policy=STREAM))
    if META_BYTES:
        words = words_from_bytes(meta_ptr.to(gl.pointer_type(gl.uint8), bitcast=True), word_at, word_ok, chunk * 16,
                                 row_words)
    else:
        word = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, word_at.type.layout)))
        word_in_row = gl.expand_dims(gl.expand_dims(chunk * 4 + word < row_words, 0), 1)
        words = gl.load(meta_ptr + word_at + chunk * 4, mask=word_ok & word_in_row, other=NO_INPUTS,
                        eviction_policy=STREAM)
    return values, scales, mins, words


@gluon.jit
def byte_addresses(rows, rows_ok, row_bytes, LM: gl.constexpr):
    """As `word_addresses`, for metadata rows of row_bytes bytes (not whole words): the byte where word j of a
    row's first chunk starts."""
    at, ok = word_addresses(rows, rows_ok, row_bytes, LM)
    word = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, LM)))
    return at + 3 * gl.expand_dims(gl.expand_dims(word, 0), 1), ok


@gluon.jit
def words_from_bytes(bytes_ptr, byte_at, ok, first, row_bytes):
    """Metadata words (BLOCK_N, 4 lanes, 4 words) from rows of row_bytes bytes: word j is bytes first + 4 j ..
    first + 4 j + 3 of its row (byte_at from `byte_addresses`), NO_INPUTS's bytes past the row or where not ok."""
    word = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, byte_at.type.layout)))
    in_row = first + 4 * gl.expand_dims(gl.expand_dims(word, 0), 1)
    words = (byte_at * 0).to(gl.int32)
    for b in gl.static_range(4):
        byte = gl.load(bytes_ptr + byte_at + first + b, mask=ok & (in_row + b < row_bytes), other=NO_INPUTS_BYTE,
                       eviction_policy=STREAM)
        words = words | (byte.to(gl.int32) << (8 * b))
    return words


@gluon.jit
def kept_pair(low, high, s2, m2, J: gl.constexpr, dtype: gl.constexpr):
    """int32: the two kept values (q0 * s + m, q1 * s + m) of byte J of each q word, in `dtype`, from the
    word's low and high nibbles (low, high: each byte's nibble in its bits 0-3). One PRMT places them at bits
    0-3 and 16-19 (a zero byte is a copy of a zero sign bit), then as `int4_mma.dequantized_pair`."""
    selector = gl.full(low.shape, J | ((8 | J) << 4) | ((4 + J) << 8) | ((12 + J) << 12), gl.int32,
                       layout=low.type.layout)  # a constant: the assembler folds it into the PRMT
    if dtype == gl.bfloat16:
        return gl.inline_asm_elementwise(
            "{ .reg .b32 t, c; mov.b32 c, 0x43004300; prmt.b32 t, $1, $2, $5; or.b32 t, t, c; "
            "sub.rn.bf16x2 t, t, c; fma.rn.bf16x2 $0, t, $3, $4; }",
            "=r,r,r,r,r,r", [low, high, s2, m2, selector], dtype=gl.int32, is_pure=True, pack=1)
    return gl.inline_asm_elementwise(
        "{ .reg .b32 t, c; mov.b32 c, 0x64006400; prmt.b32 t, $1, $2, $5; or.b32 t, t, c; "
        "sub.rn.f16x2 t, t, c; fma.rn.f16x2 $0, t, $3, $4; }",
        "=r,r,r,r,r,r", [low, high, s2, m2, selector], dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def dequantized(qwords, s2, m2, dtype: gl.constexpr):
    """The kept-value pairs (BLOCK_N, 32) of a chunk's q words (BLOCK_N, 8): byte j of word w is group 4 w + j."""
    low = qwords & 0x0F0F0F0F
    high = (qwords >> 4) & 0x0F0F0F0F
    pairs = gl.join(gl.join(kept_pair(low, high, s2, m2, 0, dtype), kept_pair(low, high, s2, m2, 1, dtype)),
                    gl.join(kept_pair(low, high, s2, m2, 2, dtype), kept_pair(low, high, s2, m2, 3, dtype)))
    return gl.reshape(gl.permute(pairs, [0, 1, 3, 2]), [qwords.shape[0], 4 * qwords.shape[1]])


@gluon.jit
def word_addresses(rows, rows_ok, row_words, LM: gl.constexpr):
    """(offsets (BLOCK_N, 4 lanes, 4 words) in LM of the metadata words of a chunk's `rows`, row_words words a
    row apart, the same for every lane of a quad; where the rows exist). rows and rows_ok in LM's row slice."""
    lane = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, LM)))
    word = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, LM)))
    at = (gl.expand_dims(gl.expand_dims(rows.to(gl.int64) * row_words, 1) + gl.expand_dims(lane * 0, 0), 2)
          + gl.expand_dims(gl.expand_dims(word, 0), 1))
    return at, gl.expand_dims(gl.expand_dims(rows_ok, 1) & gl.expand_dims(lane < 4, 0), 2)


@gluon.jit
def x_addresses(pid_m, M, stride_xm, BLOCK_M: gl.constexpr, LG: gl.constexpr):
    """(offsets in pairs (BLOCK_M, 1) of the program's x rows, where they exist) in LG's row slice, the layout
    of `x_loads`."""
    x_rows = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, LG))
    return gl.expand_dims(x_rows.to(gl.int64) * (stride_xm // 2), 1), gl.expand_dims(x_rows < M, 1)


@gluon.jit
def x_loads(pairs_ptr, x_at, x_ok, chunk, pairs_k):
    """x's pairs (BLOCK_M, 64) of chunk `chunk` (16-byte loads), zero past pairs_k and where not x_ok."""
    p = gl.arange(0, 64, layout=gl.SliceLayout(0, x_at.type.layout))
    at = chunk * 64 + gl.expand_dims(p, 0)
    return gl.load(pairs_ptr + x_at + at, mask=x_ok & (at < pairs_k), other=0)


@gluon.jit
def nv24_mma_kernel(x_ptr, out_ptr, bias_ptr, values_ptr, scales_ptr, mins_ptr, meta_ptr, M, N, K, stride_xm,
                    stride_xk, pairs_k, row_values, row_words, row_groups, HAS_BIAS: gl.constexpr,
                    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr,
                    USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr,
                    ROUND_BF16: gl.constexpr, GROUP: gl.constexpr, META_BYTES: gl.constexpr, LV: gl.constexpr,
                    LM: gl.constexpr, LG: gl.constexpr, LS: gl.constexpr, LD: gl.constexpr, MMA: gl.constexpr,
                    PDL: gl.constexpr):
    """NV24 (GROUP 0): values_ptr the values (N, Kp / 2) as row_values = Kp / 4 int32 pairs a row, scales_ptr
    and mins_ptr unused. NV24_INT4 (GROUP: kept values a quantization group): values_ptr the q bytes (N, Kp / 4)
    as row_values = Kp / 16 int32 words a row, the scales and minimums (N, row_groups) as int16. meta_ptr: the
    metadata (N, Kp / 8) as row_words = Kp / 32 int32 words a row (META_BYTES, where Kp % 32 != 0: as
    row_words = Kp / 8 bytes a row); x (M, K) read as pairs_k int32 pairs a row
    (`x_as_pairs`, stride_xm even). `tiling.launch`'s arguments and the layouts of `operand_layouts` (LV over
    the q words for NV24_INT4), `x_layout` and `step_layout`."""
    wait_for_inputs(PDL)
    dtype: gl.constexpr = x_ptr.dtype.element_ty
    pairs_ptr = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    grid_m = gl.cdiv(M, BLOCK_M)
    pid_m, pid_n = gl.program_id(0) % grid_m, gl.program_id(0) // grid_m
    per_split = gl.cdiv(gl.cdiv(K, BLOCK_K), SPLIT_K)
    first = gl.program_id(1) * per_split
    end = gl.minimum(first + per_split, gl.cdiv(K, BLOCK_K))

    rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LV))
    q = gl.arange(0, LV.shape[1], layout=gl.SliceLayout(0, LV))
    value_at = gl.expand_dims(rows.to(gl.int64) * row_values, 1) + gl.expand_dims(q, 0)
    row_at = gl.expand_dims(rows.to(gl.int64) * row_groups, 1)
    value_ok = gl.expand_dims(rows < N, 1)
    word_rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, gl.SliceLayout(2, LM)))
    if META_BYTES:
        word_at, word_ok = byte_addresses(word_rows, word_rows < N, row_words, LM)
    else:
        word_at, word_ok = word_addresses(word_rows, word_rows < N, row_words, LM)
    x_at, x_ok = x_addresses(pid_m, M, stride_xm, BLOCK_M, LG)
    steps = gl.allocate_shared_memory(gl.int32, [4 * BLOCK_M, 16], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))

    acc = gl.zeros([BLOCK_N // 16, BLOCK_M // 8, 8, 4, 2, 2], gl.float32, layout=LD)
    values, s2, m2, words = weight_loads(values_ptr, scales_ptr, mins_ptr, meta_ptr, value_at, word_at, row_at,
                                         first, value_ok, word_ok, row_values, row_words, row_groups, GROUP,
                                         META_BYTES)
    x_to_steps(steps, x_loads(pairs_ptr, x_at, x_ok, first, pairs_k))
    for chunk in range(first, end):
        live = chunk + 1 < end
        values_n, s2_n, m2_n, words_n = weight_loads(values_ptr, scales_ptr, mins_ptr, meta_ptr, value_at, word_at,
                                                     row_at, chunk + 1, value_ok & live, word_ok & live, row_values,
                                                     row_words, row_groups, GROUP, META_BYTES)
        x_n = x_loads(pairs_ptr, x_at, x_ok & live, chunk + 1, pairs_k)
        if GROUP:
            values = dequantized(values, s2, m2, dtype)
        acc = accumulate_steps(acc, values, words, steps, dtype, LS, LD)
        x_to_steps(steps, x_n)
        values, s2, m2, words = values_n, s2_n, m2_n, words_n
    acc = gl.reshape(gl.permute(acc, [0, 4, 2, 1, 3, 5]), [BLOCK_N, BLOCK_M])  # (n-tile, r1, g), (m-tile, c, r0)
    release_dependents(PDL)
    store_transposed(gl.convert_layout(acc, MMA), out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M,
                     BLOCK_N, SPLIT_K, MMA)


def as_words(t: torch.Tensor) -> torch.Tensor:
    """A buffer as int32 words from its start. Where its bytes end inside a word, the kernels read that word's
    bytes one by one (`words_from_bytes`). A buffer of less than one word (none, or an NV24 metadata buffer of 1 to
    3 bytes) becomes a zero-padded copy of 4 words: a view of no words would hand the kernel a null pointer."""
    flat = t.reshape(-1).view(torch.uint8)
    if flat.numel() < 4:
        return torch.cat([flat, flat.new_zeros(16 - flat.numel())]).view(torch.int32)
    return flat[:flat.numel() // 4 * 4].view(torch.int32)


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (M, K) @ W.T + bias for an NV24 or NV24_INT4 weight that `supports` takes; a `hybrid_wgmma` or
    `sparse_wgmma` config (a candidate only where that kernel takes the weight) runs that kernel."""
    if isinstance(config, hybrid_wgmma.Config):
        return hybrid_wgmma.matmul(x2d, layout, tensors, dims, bias, config, split_k, out, partials)
    if isinstance(config, sparse_wgmma.Config):
        return sparse_wgmma.matmul(x2d, layout, tensors, dims, bias, config, split_k, out, partials)
    n, k, group = dims[0], dims[1], dims[2]
    m, block_m = x2d.shape[0], x_rows_for(x2d.shape[0], MAX_M)
    if split_k is None:
        split_k = split_for(config, -(-m // block_m) * -(-n // config.block_n), -(-k // BLOCK_K), config.num_warps,
                            x2d.device)
    if layout == "nv24_int4":
        qvalues, scales, mins, meta = tensors
        pointers = [qvalues.view(torch.int32), scales.view(torch.int16), mins.view(torch.int16)]
        row_groups = scales.shape[1]
    else:
        values, meta = tensors
        pointers, row_groups, group = [values.view(torch.int32)] * 3, 0, 0
    warps, warps_m = config.num_warps, config.warps_m
    lv, lm, ld, mma = operand_layouts(config.block_n, block_m, warps, quantized=group > 0, warps_m=warps_m)
    tiling = Tiling(block_m, config.block_n, BLOCK_K, split_k)
    pairs = x_as_pairs(x2d if x2d.stride(0) % 2 == 0 else x2d.contiguous())
    meta_bytes = meta.shape[1] % 4 != 0
    return launch(nv24_mma_kernel, pairs, n, k, bias, tiling, [*pointers, as_words(meta)],
                  (pairs.shape[1] // 2, pointers[0].shape[1], meta.shape[1] // (1 if meta_bytes else 4), row_groups),
                  dict(GROUP=group, META_BYTES=meta_bytes, LV=lv, LM=lm, LG=x_layout(block_m, warps),
                       LS=step_layout(block_m, warps, warps_m), LD=ld, MMA=mma, num_warps=warps,
                       **register_cap(config)), out, partials, dependent=True)
