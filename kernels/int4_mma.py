"""INT4 at small M (2 to 16 rows of x) on the GPU: one pass over the weight, dequantized straight into the
registers of the tensor cores' A operand (mma.sync m16n8k16, Gluon).

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
split-K reduction. The launch grid depends only on M, N, K and the config: safe inside CUDA graphs.

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

from .decode import fill_split
from .gluon_decode import x_as_pairs
from .tiling import Tiling, launch, sm_count

MAX_M = 16  # at M = 64 the tile kernel is faster: x's prefetched registers crowd out the words' (RESULTS.md)
DTYPES = (torch.bfloat16, torch.float16)


@dataclasses.dataclass(frozen=True)
class Config:
    """Weight rows per program (16 a warp tile), inputs per K block (a multiple of 128), split-K slices (0: as
    many as fill the GPU) and warps."""
    block_n: int
    block_k: int
    split_k: int = 0
    num_warps: int = 4


DEFAULT = Config(128, 128, 0, 4)


def supports(layout: str, x2d: torch.Tensor) -> bool:
    """This kernel runs INT4 products of 2 to MAX_M rows of bf16 or fp16 x on CUDA."""
    return layout == "int4" and 2 <= x2d.shape[0] <= MAX_M and x2d.is_cuda and x2d.dtype in DTYPES


def candidates(m: int) -> list[Config]:
    """The configs SPARC_AUTOTUNE=1 times. A thread holds 16 int32 pairs of x for each of its BLOCK_M / 8 x
    rows and 128-input chunks, twice (prefetch): at most 8 such runs, so wide blocks go with few x rows."""
    chunks = [c for c in (1, 2, 4) if block_m_for(m) // 8 * c <= 8]
    return [Config(16 * w * r, 128 * c, split, w) for w, r, c, split in
            itertools.product((1, 2, 4), (1, 2), chunks, (0, 1))]


def bits(n: int) -> range:
    return range(n.bit_length() - 1)


def operand_layouts(block_n: int, block_k: int, block_m: int, group: int, num_warps: int):
    """(LW over the words (BLOCK_N, groups, words of a group), LX over x as int32 pairs (BLOCK_M, BLOCK_K / 2),
    the mma layout of the accumulator (BLOCK_N, BLOCK_M)): each thread's words and x values as the module
    docstring says."""
    per_group = group // 8
    word_bits = per_group.bit_length() - 1

    def word(bit):  # bit `bit` of a word's index in the block, as (row, group, word of the group)
        return [0, 0, 1 << bit] if bit < word_bits else [0, 1 << (bit - word_bits), 0]

    lw = gl.DistributedLinearLayout(
        reg_bases=[word(0), word(1), [8, 0, 0]] + [word(4 + i) for i in bits(block_k // 128)]
        + [[16 * num_warps << i, 0, 0] for i in bits(block_n // (16 * num_warps))],
        lane_bases=[word(2), word(3), [1, 0, 0], [2, 0, 0], [4, 0, 0]],
        warp_bases=[[16 << i, 0, 0] for i in bits(num_warps)], block_bases=[],
        shape=[block_n, block_k // group, per_group])
    lx = gl.DistributedLinearLayout(
        reg_bases=[[0, 1 << i] for i in range(4)] + [[0, 64 << i] for i in bits(block_k // 128)]
        + [[8 << i, 0] for i in bits(block_m // 8)],
        lane_bases=[[0, 16], [0, 32], [1, 0], [2, 0], [4, 0]], warp_bases=[[0, 0] for _ in bits(num_warps)],
        block_bases=[], shape=[block_m, block_k // 2])
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
    """int32 pairs (rows, n) of 16-bit values as (rows, 2 n) `dtype` values."""
    low, high = halves(pairs, dtype)
    return gl.reshape(gl.join(low, high), [pairs.shape[0], 2 * pairs.shape[1]])


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
def int4_mma_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk, pairs_k,
                    HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                    SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr,
                    PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr, GROUP: gl.constexpr, LW: gl.constexpr,
                    LX: gl.constexpr, MMA: gl.constexpr):
    """q_ptr: int32 words (N, Kp / 8) of the INT4 weight; scales and mins (N, Kp / GROUP) as int16; x (M, K)
    read as pairs_k = ceil(K / 2) int32 pairs a row (`x_as_pairs`; stride_xm even; an argument, so that its
    alignment is known). `tiling.launch`'s arguments plus the layouts of
    `operand_layouts`."""
    G: gl.constexpr = BLOCK_K // GROUP
    W: gl.constexpr = GROUP // 8
    LS: gl.constexpr = gl.SliceLayout(2, LW)
    dtype: gl.constexpr = x_ptr.dtype.element_ty
    pairs_ptr = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    grid_m = gl.cdiv(M, BLOCK_M)
    pid_m, pid_n = gl.program_id(0) % grid_m, gl.program_id(0) // grid_m
    row_groups = gl.cdiv(K, GROUP)
    per_split = gl.cdiv(gl.cdiv(K, BLOCK_K), SPLIT_K)
    first = gl.program_id(1) * per_split
    end = gl.minimum(first + per_split, gl.cdiv(K, BLOCK_K))

    rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LS))
    groups = first * G + gl.arange(0, G, layout=gl.SliceLayout(0, LS))
    sm_at = gl.expand_dims(rows.to(gl.int64) * row_groups, 1) + gl.expand_dims(groups, 0)
    in_group = gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(1, LW)))
    word_at = gl.expand_dims(sm_at, 2) * W + gl.expand_dims(gl.expand_dims(in_group, 0), 1)
    row_ok = gl.expand_dims(rows < N, 1)
    x_rows = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, LX))
    x_pairs = first * (BLOCK_K // 2) + gl.arange(0, BLOCK_K // 2, layout=gl.SliceLayout(0, LX))
    x_at = gl.expand_dims(x_rows.to(gl.int64) * (stride_xm // 2), 1) + gl.expand_dims(x_pairs, 0)
    x_row_ok = gl.expand_dims(x_rows < M, 1)

    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
    s2, m2, words = weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at, word_at,
                                 row_ok & gl.expand_dims(groups < row_groups, 0))
    x = gl.load(pairs_ptr + x_at, mask=x_row_ok & gl.expand_dims(x_pairs < pairs_k, 0), other=0)
    for step in range(first, end):
        ahead = step + 1 - first
        live = step + 1 < end
        s2_n, m2_n, words_n = weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at + ahead * G, word_at + ahead * (G * W),
                                           row_ok & gl.expand_dims((groups + ahead * G < row_groups) & live, 0))
        x_n = gl.load(pairs_ptr + x_at + ahead * (BLOCK_K // 2),
                      mask=x_row_ok & gl.expand_dims((x_pairs + ahead * (BLOCK_K // 2) < pairs_k) & live, 0), other=0)
        w = dequantize(words, s2, m2, dtype)
        acc = gl.nvidia.ampere.mma_v2(as_operand_a(w, MMA), as_operand_b(as_values(x, dtype), MMA), acc)
        s2, m2, words, x = s2_n, m2_n, words_n, x_n
    store_transposed(acc, out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M, BLOCK_N, SPLIT_K, MMA)


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


def split_for(config: Config, m: int, n: int, k: int, device) -> int:
    """config.split_k, or (0) the slices that fill the GPU (`decode.fill_split`)."""
    if config.split_k:
        return config.split_k
    programs = -(-m // block_m_for(m)) * -(-n // config.block_n)
    return fill_split(programs, -(-k // config.block_k), sm_count(device.index or 0))


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (M, K) @ W.T + bias for an INT4 weight, 2 <= M <= MAX_M."""
    n, k, group = dims[0], dims[1], dims[2]
    qweight, scales, mins = tensors
    block_m = block_m_for(x2d.shape[0])
    split = split_k if split_k is not None else split_for(config, x2d.shape[0], n, k, x2d.device)
    lw, lx, mma = operand_layouts(config.block_n, config.block_k, block_m, group, config.num_warps)
    tiling = Tiling(block_m, config.block_n, config.block_k, split)
    pointers = [qweight.view(torch.int32), scales.view(torch.int16), mins.view(torch.int16)]
    pairs = x_as_pairs(x2d if x2d.stride(0) % 2 == 0 else x2d.contiguous())
    return launch(int4_mma_kernel, pairs, n, k, bias, tiling, pointers, (pairs.shape[1] // 2,),
                  dict(GROUP=group, LW=lw, LX=lx, MMA=mma, num_warps=config.num_warps), out, partials)
