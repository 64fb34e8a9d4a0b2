"""INT4 and BSR_INT4 at small M (INT4 2 to 16 rows of x, BSR_INT4 2 to 128) on the GPU: one pass over the weight,
dequantized straight into the registers of the tensor cores' A operand (mma.sync m16n8k16, Gluon).

At small M a layer is still a stream of weight bytes: at M = 16 a 4096 x 4096 INT4 layer moves 8.9 MB of
weights against 128 KB of x. The tile kernel's tl.dot gets its rebuilt weight block into the operand layout
through shared memory; here nothing of a K block leaves the registers. The product is transposed, out.T = W @
x.T: the weight is the A operand (16 rows a warp tile), x the B operand (8 of its rows a tile). Inside each
128-input chunk of K the inputs are renumbered so that a thread's A values are exactly the 32 inputs of the
four words it loads (16 contiguous bytes of a row), and its B values the same 32 inputs of x (64 contiguous
bytes of an x row). Thread (g, c) of a warp (g = lane // 4, c = lane % 4) loads words 4c .. 4c + 3 of rows g
and g + 8 of its row tile; word s, nibble j = 4 j2 + 2 j1 + j0 is input p = 32 c + 8 s + j of the chunk, and
the mma sees it at k = 32 s + 16 j1 + 8 j0 + 2 c + j2. That is where m16n8k16 wants thread c's values: k
bit 0 and bits 3 and up from registers, bits 1 and 2 from c. A sum over k does not depend on its order, and x
gets the same renumbering, so both operands are loaded contiguously and reach their operand layout by a
renaming of registers (`as_operand_a`, `as_operand_b`, asserted trivial: no data moves).

Per K block of BLOCK_K inputs a thread loads its words (one 16-byte load a row and chunk), the scale and
minimum of their groups and its x values (16-byte loads of int32 pairs, so that the prefetched x stays in
32-bit registers). A word becomes four pairs of weights in the activation dtype, nibbles (r, r + 4), with one
LOP3 (the half-float 128 + q), one exact subtraction and one fused multiply-add each (`dequantized_pair`):
about 2 instructions a weight. So k bit 0 is nibble bit 2, and x's pairs are regrouped to match (one PRMT a
pair, shared by the warp tile's rows). w = q * s + m is rounded once from its exact value; the reference
rounds through fp32 first, and the two can differ (by one unit in the last place) only where q * s + m needs
more than fp32's 24 bits, which takes a group whose |minimum| is above about 2^16 times its scale. Then BLOCK_M / 8
mma per 16 inputs and row tile. The next block's loads are issued before the current block is computed.
Program (pid, pid_k) owns BLOCK_N weight rows and BLOCK_M x rows, and the pid_k-th of SPLIT_K slices
of K; the epilogue writes out (M, N) (bias added, cast) or the fp32 partial of its slice for `tiling`'s
split-K reduction. BSR_INT4 runs the same loop over the kept blocks of one block row a program (BLOCK_N =
block_n): a step's quantization groups are kept blocks, each with the x pairs at its block column. The launch
grid depends only on M, N, K and the config: safe inside CUDA graphs. At small M the grid sets how many warps
hide the loads' latency, so split-K fills the GPU to WARPS_PER_SM warps an SM unless the config fixes it.

Gluon does not run under TRITON_INTERPRET: on the CPU small M runs the tile kernel; the GPU tests check this
kernel against the reference, and tests/test_int4_mma.py compiles it for sm_90 on any machine and checks its
loop (no shared memory, 16-byte loads).
"""
from __future__ import annotations

import dataclasses
import itertools

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .gluon_decode import x_as_pairs
from .pdl import release_dependents, wait_for_inputs
from .tiling import Tiling, launch, sm_count

MAX_M = 16  # x rows a program: at M = 64 x's prefetched registers would crowd out the words' (RESULTS.md)
# BSR_INT4 up to 128 rows, in programs of MAX_M x rows; those of a block row run side by side, so its blocks come
# from DRAM about once. Up to 64 rows 1.3 to 2.4x faster than the tile kernel on the Llama shapes, but for
# 14336 x 4096 at M = 64 (6% slower); at 128 rows up to 1.3x faster than the rebuild and cuBLAS, at 256 slower
# (RESULTS.md). INT4 past 16 rows runs `int4_wgmma`.
BSR_MAX_M = 128
DTYPES = (torch.bfloat16, torch.float16)


@dataclasses.dataclass(frozen=True)
class Config:
    """Weight rows per program (16 a warp tile), inputs per K block (a multiple of 128), split-K slices (0: as
    many as fill the GPU) and warps."""
    block_n: int
    block_k: int
    split_k: int = 0
    num_warps: int = 4


DEFAULTS = {"int4": Config(128, 128, 0, 4), "bsr_int4": Config(0, 128, 0, 4)}  # BSR_INT4: block_n is the format's


def default(layout: str, m: int) -> Config:
    return DEFAULTS[layout]


WARPS_PER_SM = 12  # the split-K fill: at small M the grid, not the registers, sets how many warps hide latency


def supports(layout: str, x2d: torch.Tensor, tensors=None) -> bool:
    """This kernel runs INT4 products of 2 to MAX_M rows and BSR_INT4 products of 2 to BSR_MAX_M rows of bf16 or
    fp16 x on CUDA, whose scales are stored in x's dtype (the tensors' dtypes are read, not their data)."""
    scales = None if tensors is None else tensors[-2]
    most = BSR_MAX_M if layout == "bsr_int4" else MAX_M
    return (layout in DEFAULTS and 2 <= x2d.shape[0] <= most and x2d.is_cuda and x2d.dtype in DTYPES
            and (scales is None or scales.dtype == x2d.dtype))


def candidates(layout: str, m: int) -> list[Config]:
    """The configs SPARC_AUTOTUNE=1 times. A thread holds 16 int32 pairs of x for each of its BLOCK_M / 8 x
    rows and 128-input chunks, twice (prefetch): at most 8 such runs, so wide blocks go with few x rows."""
    chunks = [c for c in (1, 2) if x_rows_for(m) // 8 * c <= 8]
    if layout == "bsr_int4":
        return [Config(0, 128 * c, split, w) for c, split, w in itertools.product(chunks, (0, 2, 4, 8, 16), (1, 2, 4))]
    return [Config(16 * w * r, 128 * c, split, w) for w, r, c, split in
            itertools.product((2, 4), (1, 2), chunks, (0, 1, 2, 4, 8))]


def bits(n: int) -> range:
    return range(n.bit_length() - 1)


def operand_layouts(block_n: int, block_k: int, block_m: int, group: int, num_warps: int):
    """(LW over the words (BLOCK_N, groups, words of a group), LX over x as int32 pairs (BLOCK_M, groups, pairs
    of a group), the mma layout of the accumulator (BLOCK_N, BLOCK_M)): each thread's words and x values as the
    module docstring says."""
    def split(bit, size, lead):  # bit `bit` of an index into consecutive runs of `size`, as (lead, run, within)
        low = size.bit_length() - 1
        return [*lead, 0, 1 << bit] if bit < low else [*lead, 1 << (bit - low), 0]

    def word(bit):
        return split(bit, group // 8, [0])

    def pair(bit):
        return split(bit, group // 2, [0])

    lw = gl.DistributedLinearLayout(
        reg_bases=[word(0), word(1), [8, 0, 0]] + [word(4 + i) for i in bits(block_k // 128)]
        + [[16 * num_warps << i, 0, 0] for i in bits(block_n // (16 * num_warps))],
        lane_bases=[word(2), word(3), [1, 0, 0], [2, 0, 0], [4, 0, 0]],
        warp_bases=[[16 << i, 0, 0] for i in bits(num_warps)], block_bases=[],
        shape=[block_n, block_k // group, group // 8])
    lx = gl.DistributedLinearLayout(
        reg_bases=[pair(i) for i in range(4)] + [pair(6 + i) for i in bits(block_k // 128)]
        + [[8 << i, 0, 0] for i in bits(block_m // 8)],
        lane_bases=[pair(4), pair(5), [1, 0, 0], [2, 0, 0], [4, 0, 0]], warp_bases=[[0, 0, 0] for _ in bits(num_warps)],
        block_bases=[], shape=[block_m, block_k // group, group // 2])
    mma = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, 8])
    return lw, lx, mma


@gluon.jit
def renumbered(values):
    """values (rows, BLOCK_K) with each 128-input chunk renumbered, input 32 c + 8 s + 4 j2 + 2 j1 + j0 to k =
    32 s + 16 j1 + 8 j0 + 2 c + j2, as (rows, chunks, 4 s, 2 j1, 2 j0, 4 c, 2 j2)."""
    rows: gl.constexpr = values.shape[0]
    chunks: gl.constexpr = values.shape[1] // 128
    return gl.permute(gl.reshape(values, [rows, chunks, 4, 4, 2, 2, 2]), [0, 1, 3, 5, 6, 2, 4])


@gluon.jit
def as_operand_a(w, MMA: gl.constexpr):
    """The weight block (BLOCK_N, BLOCK_K), renumbered, as the A operand: registers renamed, nothing moved."""
    a = gl.reshape(renumbered(w), [w.shape[0], w.shape[1]])
    return gl.convert_layout(a, gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2), assert_trivial=True)


@gluon.jit
def as_operand_b(x, MMA: gl.constexpr):
    """x (BLOCK_M, BLOCK_K), renumbered, as the B operand (BLOCK_K, BLOCK_M): registers renamed, nothing moved."""
    b = gl.permute(gl.reshape(renumbered(x), [x.shape[0], x.shape[1]]), [1, 0])
    return gl.convert_layout(b, gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2), assert_trivial=True)


@gluon.jit
def halves(pairs, dtype: gl.constexpr):
    """(low, high) 16-bit halves of int32 pairs, as `dtype` (a renaming: no instruction)."""
    low, high = gl.inline_asm_elementwise("mov.b32 {$0, $1}, $2;", "=h,=h,r", [pairs], dtype=(gl.int16, gl.int16),
                                          is_pure=True, pack=1)
    return low.to(dtype, bitcast=True), high.to(dtype, bitcast=True)


@gluon.jit
def as_values(pairs, dtype: gl.constexpr):
    """int32 pairs (rows, groups, pairs of a group) of 16-bit values as (rows, 2 * groups * pairs) `dtype`."""
    low, high = halves(pairs, dtype)
    return gl.reshape(gl.join(low, high), [pairs.shape[0], 2 * pairs.shape[1] * pairs.shape[2]])


@gluon.jit
def dequantized_pair(words, s2, m2, R: gl.constexpr, dtype: gl.constexpr):
    """int32: the pair (w_R, w_R+4) of each word's nibbles in `dtype`, w = q * s + m for s2 = (s, s) and m2 =
    (m, m) packed the same way. q | 128's bits (1024's for fp16) is the half-float 128 + q, one LOP3 for the
    pair; subtracting 128 is exact and one fused multiply-add rounds q * s + m once."""
    moved = words >> (4 * R)  # bits 16 and up of the shifted-in sign never reach the mask
    if dtype == gl.bfloat16:
        return gl.inline_asm_elementwise(
            "{ .reg .b32 t, c; mov.b32 c, 0x43004300; lop3.b32 t, $1, 0x000F000F, c, 0xEA; "
            "sub.rn.bf16x2 t, t, c; fma.rn.bf16x2 $0, t, $2, $3; }",
            "=r,r,r,r", [moved, s2, m2], dtype=gl.int32, is_pure=True, pack=1)
    return gl.inline_asm_elementwise(
        "{ .reg .b32 t, c; mov.b32 c, 0x64006400; lop3.b32 t, $1, 0x000F000F, c, 0xEA; "
        "sub.rn.f16x2 t, t, c; fma.rn.f16x2 $0, t, $2, $3; }",
        "=r,r,r,r", [moved, s2, m2], dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def dequantize(words, s2, m2, dtype: gl.constexpr):
    """The (BLOCK_N, BLOCK_K) weight block in `dtype` from its words (BLOCK_N, groups, words) and the packed
    scales and minimums of its groups (BLOCK_N, groups): four pairs a word (`dequantized_pair`), joined back in
    input order."""
    s3 = gl.expand_dims(s2, 2)
    m3 = gl.expand_dims(m2, 2)
    low0, high0 = halves(dequantized_pair(words, s3, m3, 0, dtype), dtype)
    low1, high1 = halves(dequantized_pair(words, s3, m3, 1, dtype), dtype)
    low2, high2 = halves(dequantized_pair(words, s3, m3, 2, dtype), dtype)
    low3, high3 = halves(dequantized_pair(words, s3, m3, 3, dtype), dtype)
    # (.., j2, j0, j1) for nibble 4 j2 + 2 j1 + j0, then in input order
    nibbles = gl.join(gl.join(gl.join(low0, high0), gl.join(low1, high1)),
                      gl.join(gl.join(low2, high2), gl.join(low3, high3)))
    return gl.reshape(gl.permute(nibbles, [0, 1, 2, 3, 5, 4]), [words.shape[0], 8 * words.shape[1] * words.shape[2]])


@gluon.jit
def packed_twice(values):
    """int32 (v, v) of 16-bit values loaded as int16."""
    bits = values.to(gl.int32) & 0xFFFF
    return bits | (bits << 16)


@gluon.jit
def weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at, word_at, ok):
    """(scales, mins (each packed twice in an int32), words) of one K block, zero where not ok."""
    s2 = packed_twice(gl.load(scales_ptr + sm_at, mask=ok, other=0))
    m2 = packed_twice(gl.load(mins_ptr + sm_at, mask=ok, other=0))
    return s2, m2, gl.load(q_ptr + word_at, mask=gl.expand_dims(ok, 2), other=0)


@gluon.jit
def x_loads(pairs_ptr, x_at, cols, P: gl.constexpr, x_ok, pairs_k):
    """x's int32 pairs (BLOCK_M, groups, P) of the groups at input columns `cols` (groups,) times 2 P, zero
    past pairs_k pairs and where not x_ok (BLOCK_M, 1, 1)."""
    within = gl.arange(0, P, layout=gl.SliceLayout(0, gl.SliceLayout(1, x_at.type.layout)))
    at = gl.expand_dims(gl.expand_dims(cols, 0), 2) * P + gl.expand_dims(gl.expand_dims(within, 0), 1)
    return gl.load(pairs_ptr + x_at + at, mask=x_ok & (at < pairs_k), other=0)


@gluon.jit
def x_rows_at(pid_m, M, stride_xm, BLOCK_M: gl.constexpr, LX: gl.constexpr):
    """(offset of each x row in pairs (BLOCK_M, 1, 1), rows < M) for program row block pid_m."""
    x_rows = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, gl.SliceLayout(2, LX)))
    x_at = gl.expand_dims(gl.expand_dims(x_rows.to(gl.int64) * (stride_xm // 2), 1), 2)
    return x_at, gl.expand_dims(gl.expand_dims(x_rows < M, 1), 2)


@gluon.jit
def accumulate(acc, words, s2, m2, x, dtype: gl.constexpr, MMA: gl.constexpr):
    """acc + the block's weights @ x.T: dequantized, both renumbered into operands, one mma_v2."""
    w = dequantize(words, s2, m2, dtype)
    return gl.nvidia.ampere.mma_v2(as_operand_a(w, MMA), as_operand_b(as_values(x, dtype), MMA), acc)


@gluon.jit
def step_range(K, BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr):
    """(first, end): the K steps of BLOCK_K inputs in this program's slice, the program_id(1)-th of SPLIT_K."""
    per_split = gl.cdiv(gl.cdiv(K, BLOCK_K), SPLIT_K)
    first = gl.program_id(1) * per_split
    return first, gl.minimum(first + per_split, gl.cdiv(K, BLOCK_K))


@gluon.jit
def word_offsets(pid_n, first, N, K, BLOCK_N: gl.constexpr, G: gl.constexpr, GROUP: gl.constexpr,
                 LW: gl.constexpr):
    """For the BLOCK_N weight rows of block pid_n at K step `first`, in LW's slices: (the step's groups (G,),
    the offsets of their scales and minimums (BLOCK_N, G) and of their words (BLOCK_N, G, words of a group),
    which rows exist (BLOCK_N, 1), the groups of a row)."""
    W: gl.constexpr = GROUP // 8
    LS: gl.constexpr = gl.SliceLayout(2, LW)
    row_groups = gl.cdiv(K, GROUP)
    rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LS))
    groups = first * G + gl.arange(0, G, layout=gl.SliceLayout(0, LS))
    sm_at = gl.expand_dims(rows.to(gl.int64) * row_groups, 1) + gl.expand_dims(groups, 0)
    in_group = gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(1, LW)))
    word_at = gl.expand_dims(sm_at, 2) * W + gl.expand_dims(gl.expand_dims(in_group, 0), 1)
    return groups, sm_at, word_at, gl.expand_dims(rows < N, 1), row_groups


@gluon.jit
def int4_mma_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk, pairs_k,
                    HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                    SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr,
                    PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr, GROUP: gl.constexpr, LW: gl.constexpr,
                    LX: gl.constexpr, MMA: gl.constexpr, PDL: gl.constexpr):
    """q_ptr: int32 words (N, Kp / 8) of the INT4 weight; scales and mins (N, Kp / GROUP) as int16; x (M, K)
    read as pairs_k = ceil(K / 2) int32 pairs a row (`x_as_pairs`; stride_xm even; an argument, so that its
    alignment is known). `tiling.launch`'s arguments plus the layouts of `operand_layouts`."""
    wait_for_inputs(PDL)
    G: gl.constexpr = BLOCK_K // GROUP
    W: gl.constexpr = GROUP // 8
    dtype: gl.constexpr = x_ptr.dtype.element_ty
    pairs_ptr = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    grid_m = gl.cdiv(M, BLOCK_M)
    pid_m, pid_n = gl.program_id(0) % grid_m, gl.program_id(0) // grid_m
    first, end = step_range(K, BLOCK_K, SPLIT_K)
    groups, sm_at, word_at, row_ok, row_groups = word_offsets(pid_n, first, N, K, BLOCK_N, G, GROUP, LW)
    x_at, x_ok = x_rows_at(pid_m, M, stride_xm, BLOCK_M, LX)
    x_groups = first * G + gl.arange(0, G, layout=gl.SliceLayout(0, gl.SliceLayout(2, LX)))

    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
    s2, m2, words = weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at, word_at,
                                 row_ok & gl.expand_dims(groups < row_groups, 0))
    x = x_loads(pairs_ptr, x_at, x_groups, GROUP // 2, x_ok, pairs_k)
    for step in range(first, end):
        ahead = step + 1 - first
        live = step + 1 < end
        s2_n, m2_n, words_n = weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at + ahead * G, word_at + ahead * (G * W),
                                           row_ok & gl.expand_dims((groups + ahead * G < row_groups) & live, 0))
        x_n = x_loads(pairs_ptr, x_at, x_groups + ahead * G, GROUP // 2, x_ok & live, pairs_k)
        acc = accumulate(acc, words, s2, m2, x, dtype, MMA)
        s2, m2, words, x = s2_n, m2_n, words_n, x_n
    release_dependents(PDL)
    store_transposed(acc, out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M, BLOCK_N, SPLIT_K, MMA)


@gluon.jit
def bsr_weight_loads(q_ptr, scales_ptr, mins_ptr, blocks, end, rows, in_group, BLOCK_N: gl.constexpr,
                     W: gl.constexpr):
    """(scales, mins, words) of the kept blocks `blocks` (G,), zero from block `end` on."""
    sm_at = gl.expand_dims(blocks.to(gl.int64) * BLOCK_N, 0) + gl.expand_dims(rows, 1)
    word_at = gl.expand_dims(sm_at, 2) * W + gl.expand_dims(gl.expand_dims(in_group, 0), 1)
    return weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at, word_at, gl.expand_dims(blocks < end, 0))


@gluon.jit
def bsr_columns(col_ptr, blocks, end):
    """The block column of each kept block `blocks` (G,) in x's layout; column 0 from block `end` on (their x is
    finite and meets a zero weight)."""
    return gl.load(col_ptr + blocks, mask=blocks < end, other=0).to(gl.int32)


@gluon.jit
def bsr_int4_mma_kernel(x_ptr, out_ptr, bias_ptr, row_ptr, col_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K,
                        stride_xm, stride_xk, pairs_k, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr,
                        BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr,
                        DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr,
                        GROUP: gl.constexpr, LW: gl.constexpr, LX: gl.constexpr, MMA: gl.constexpr,
                        PDL: gl.constexpr):
    """BSR_INT4 (`bsr_int4`'s tensors, words as int32, scales and mins as int16) with BLOCK_N = block_n:
    program (pid, pid_k) owns one block row and the pid_k-th of SPLIT_K runs of its kept blocks (row pointers
    read on the device), G = BLOCK_K / GROUP blocks a step, each the words of one LW group and the x pairs at
    its column (column indices load two steps ahead, the rest one). x as for `int4_mma_kernel`."""
    wait_for_inputs(PDL)
    G: gl.constexpr = BLOCK_K // GROUP
    W: gl.constexpr = GROUP // 8
    LS: gl.constexpr = gl.SliceLayout(2, LW)
    dtype: gl.constexpr = x_ptr.dtype.element_ty
    pairs_ptr = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    grid_m = gl.cdiv(M, BLOCK_M)
    pid_m, block_row = gl.program_id(0) % grid_m, gl.program_id(0) // grid_m
    start = gl.load(row_ptr + block_row)
    stop = gl.load(row_ptr + block_row + 1)
    per_split = gl.cdiv(gl.cdiv(stop - start, G), SPLIT_K) * G
    first = start + gl.program_id(1) * per_split
    end = gl.minimum(first + per_split, stop)

    rows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LS))
    g_w = gl.arange(0, G, layout=gl.SliceLayout(0, LS))
    g_x = gl.arange(0, G, layout=gl.SliceLayout(0, gl.SliceLayout(2, LX)))
    in_group = gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(1, LW)))
    x_at, x_ok = x_rows_at(pid_m, M, stride_xm, BLOCK_M, LX)

    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
    s2, m2, words = bsr_weight_loads(q_ptr, scales_ptr, mins_ptr, first + g_w, end, rows, in_group, BLOCK_N, W)
    x = x_loads(pairs_ptr, x_at, bsr_columns(col_ptr, first + g_x, end), GROUP // 2, x_ok, pairs_k)
    cols_n = bsr_columns(col_ptr, first + G + g_x, end)
    for block in range(first, end, G):  # columns two steps ahead: x's loads never wait for theirs
        cols_nn = bsr_columns(col_ptr, block + 2 * G + g_x, end)
        s2_n, m2_n, words_n = bsr_weight_loads(q_ptr, scales_ptr, mins_ptr, block + G + g_w, end, rows, in_group,
                                               BLOCK_N, W)
        x_n = x_loads(pairs_ptr, x_at, cols_n, GROUP // 2, x_ok & (block + G < end), pairs_k)
        acc = accumulate(acc, words, s2, m2, x, dtype, MMA)
        s2, m2, words, x, cols_n = s2_n, m2_n, words_n, x_n, cols_nn
    release_dependents(PDL)
    store_transposed(acc, out_ptr, bias_ptr, pid_m, block_row, M, N, HAS_BIAS, BLOCK_M, BLOCK_N, SPLIT_K, MMA)


@gluon.jit
def store_transposed(acc, out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr,
                     BLOCK_N: gl.constexpr, SPLIT_K: gl.constexpr, MMA: gl.constexpr):
    """acc (BLOCK_N, BLOCK_M) into out (M, N): bias added and cast with one slice, else the fp32 partial of
    slice pid_k in (SPLIT_K, M, N)."""
    rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, MMA))
    cols = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, MMA))
    mask = gl.expand_dims(rows < N, 1) & gl.expand_dims(cols < M, 0)
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += gl.expand_dims(gl.load(bias_ptr + rows, mask=rows < N, other=0.0).to(gl.float32), 1)
        at = gl.expand_dims(cols.to(gl.int64) * N, 0) + gl.expand_dims(rows, 1)
        gl.store(out_ptr + at, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        at = gl.expand_dims((gl.program_id(1) * M + cols).to(gl.int64) * N, 0) + gl.expand_dims(rows, 1)
        gl.store(out_ptr + at, acc, mask=mask)


def block_m_for(m: int) -> int:
    return max(8, 1 << (m - 1).bit_length())


def x_rows_for(m: int, most: int = MAX_M) -> int:
    """x rows a program (at most `most`, this kernel's MAX_M by default): past them, programs split x's rows."""
    return min(most, block_m_for(m))


def split_for(config: Config, programs: int, steps: int, num_warps: int, device) -> int:
    """config.split_k, or (0) the slices that bring `programs` of num_warps warps to WARPS_PER_SM warps an SM,
    at most one a K step."""
    if config.split_k:
        return config.split_k
    return max(1, min(WARPS_PER_SM * sm_count(device.index or 0) // (programs * num_warps), steps))


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (M, K) @ W.T + bias for an INT4 or BSR_INT4 weight that `supports` takes."""
    n, k, group = dims[0], dims[1], dims[2]
    m = x2d.shape[0]
    block_m = x_rows_for(m)
    if layout == "bsr_int4":
        row_ptr, col_idx, qweight, scales, mins = tensors
        block_n, warps = dims[3], min(config.num_warps, dims[3] // 16)
        kernel, pointers = bsr_int4_mma_kernel, [row_ptr, col_idx]
    else:
        qweight, scales, mins = tensors
        block_n, warps = config.block_n, config.num_warps
        kernel, pointers = int4_mma_kernel, []
    if split_k is None:  # over K steps of BLOCK_K inputs (a BSR_INT4 block row has at most that many)
        steps = -(-(-(-k // group)) // (config.block_k // group))  # groups of the row, G a step
        split_k = split_for(config, -(-m // block_m) * -(-n // block_n), steps, warps, x2d.device)
    pointers += [qweight.view(torch.int32), scales.view(torch.int16), mins.view(torch.int16)]
    lw, lx, mma = operand_layouts(block_n, config.block_k, block_m, group, warps)
    tiling = Tiling(block_m, block_n, config.block_k, split_k)
    pairs = x_as_pairs(x2d if x2d.stride(0) % 2 == 0 else x2d.contiguous())
    return launch(kernel, pairs, n, k, bias, tiling, pointers, (pairs.shape[1] // 2,),
                  dict(GROUP=group, LW=lw, LX=lx, MMA=mma, num_warps=warps), out, partials, dependent=True)
