"""Single-row decode kernels: x (1, K) @ W.T + bias for INT4, NV24, NV24_INT4 and BSR_INT4, one weight pass.

At M == 1 a layer is a stream of weight bytes (a 4096 x 4096 INT4 layer is 8.9 MB against 8 KB of x), so the
kernels are built around the weight loads: every stored byte is read once, as 32-bit words (int32 views of the
packed tensors, made on the host), with 16-byte contiguous loads along each row, and unpacked with shifts and
masks. Nothing is converted with an integer-to-float instruction: a 4-bit q is moved to the top of an fp32
mantissa, f = 1 + q / 16 (one shift and one and-or), so q * x = 16 * (f * x - x); a bf16 value is the high or
low half of its word shifted into an fp32. The activations are tiny and stay in L1; each program loads the x
values of its words once and reuses them for all its rows.

Kernel guide. Program (pid_n, pid_k) owns BLOCK_N output rows and the pid_k-th of SPLIT_K slices of the K
blocks (for BSR_INT4: one block row and every SPLIT_K-th of its kept blocks, the row pointers read on the
device). Per K block it loads, for its rows, a (BLOCK_N, G, W) tile of words, W words per group:

    int4       8 nibbles a word, nibble i (bits 4i..4i+3) = input 8w + i (the packed byte order read as
               little-endian words); G quantization groups of GROUP inputs, W = GROUP / 8. Per word
               d = sum_i f_i * x[8w + i] and the program-wide xs = sum_i x[8w + i]; with a = 16 s and
               b = m - 16 s of its group, acc += a * d + b * xs (two FMAs a word for scale and minimum).
    bsr_int4   the same per stored block (block_n rows x GROUP inputs), BLOCK_B blocks per iteration, each
               block's x columns from its column index.
    nv24       (bf16 only) one word per group of 4 inputs (its two kept values), 2 words per meta byte; the
               meta nibble picks x[4g + idx] among the group's four x values with three selects.
    nv24_int4  one word per 4 groups of 4 (a byte each: v0 low nibble, v1 high), W = GROUP / 8 words per
               quantization group of 2 * GROUP inputs; the meta read as int16 words, 4 nibbles matching
               the 4 value bytes. Per word d = sum f * x_kept and xs = sum x_kept (row-dependent),
               acc += a * d + b * xs.
The fp32 accumulator keeps the (BLOCK_N, G, W) shape through the loop and is reduced once at the end; the
epilogue (bias, cast, or fp32 partials summed by the split-K reduction) is `tiling`'s with BLOCK_M = 1.
Launch grids depend only on N, K and the config: safe inside CUDA graphs and torch.compile.
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from .tiling import Tiling, launch, store_result

LAYOUTS = ("int4", "nv24", "nv24_int4", "bsr_int4")
MANTISSA_Q = tl.constexpr(0x00780000)  # bits 19..22: q / 16 in the mantissa of 1.0
ONE = tl.constexpr(0x3F800000)


@dataclasses.dataclass(frozen=True)
class Config:
    """Rows per program (BSR_INT4: blocks per iteration), inputs per K block, split-K (0: chosen from the SM
    count) and launch options."""
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 2


DEFAULTS = {  # layout -> Config, used where the tuned table has no entry
    "int4": Config(16, 1024, 1, 4), "nv24": Config(16, 512, 1, 4), "nv24_int4": Config(16, 2048, 1, 4),
    "bsr_int4": Config(4, 0, 1, 4),
}


@triton.jit
def nibble_as_float(words, I: tl.constexpr):
    """1 + q / 16 in fp32 for the nibble at bits 4I..4I+3 of each word."""
    if 4 * I <= 19:
        moved = words << (19 - 4 * I)
    else:
        moved = words >> (4 * I - 19)
    return ((moved & MANTISSA_Q) | ONE).to(tl.float32, bitcast=True)


@triton.jit
def int4_word_sums(words, x_ptr, kbase, K, stride_xk):
    """(d, xs): d = sum_i (1 + q_i / 16) * x[kbase + i] per word and xs = sum_i x[kbase + i]; kbase (G, W)."""
    d = tl.zeros(words.shape, tl.float32)
    xs = tl.zeros(kbase.shape, tl.float32)
    for i in tl.static_range(8):
        xi = tl.load(x_ptr + (kbase + i) * stride_xk, mask=kbase + i < K, other=0.0).to(tl.float32)
        d += nibble_as_float(words, i) * xi[None]
        xs += xi
    return d, xs


@triton.jit
def int4_decode_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk,
                       HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr,
                       PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr, GROUP: tl.constexpr):
    """q_ptr: int32 words (N, Kp / 8)."""
    G: tl.constexpr = BLOCK_K // GROUP
    W: tl.constexpr = GROUP // 8
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    row_groups = tl.cdiv(K, GROUP)
    steps = tl.cdiv(row_groups, G)
    per_split = tl.cdiv(steps, SPLIT_K)
    acc = tl.zeros((BLOCK_N, G, W), tl.float32)
    for step in range(pid_k * per_split, tl.minimum(pid_k * per_split + per_split, steps)):
        groups = step * G + tl.arange(0, G)
        ok = row_ok[:, None] & (groups < row_groups)[None, :]
        meta = rows.to(tl.int64)[:, None] * row_groups + groups[None, :]
        s = tl.load(scales_ptr + meta, mask=ok, other=0.0).to(tl.float32)
        m = tl.load(mins_ptr + meta, mask=ok, other=0.0).to(tl.float32)
        words = tl.load(q_ptr + meta[:, :, None] * W + tl.arange(0, W)[None, None, :], mask=ok[:, :, None],
                        other=0)
        kbase = 8 * (groups[:, None] * W + tl.arange(0, W)[None, :])
        d, xs = int4_word_sums(words, x_ptr, kbase, K, stride_xk)
        acc += (16 * s)[:, :, None] * d + (m - 16 * s)[:, :, None] * xs[None]
    out = tl.sum(tl.sum(acc, axis=2), axis=1)[None, :]
    store_result(out, out_ptr, bias_ptr, tl.arange(0, 1), rows, 1, N, pid_k, HAS_BIAS, SPLIT_K, ROUND_BF16)


@triton.jit
def bsr_int4_decode_kernel(x_ptr, out_ptr, bias_ptr, row_ptr, col_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K,
                           stride_xm, stride_xk, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                           USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
                           ROUND_BF16: tl.constexpr, BLOCK_B: tl.constexpr):
    """BLOCK_N = block_n and BLOCK_K = group; q_ptr: int32 words (nnz, block_n, group / 8)."""
    W: tl.constexpr = BLOCK_K // 8
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    first = tl.load(row_ptr + pid_n)
    count = tl.load(row_ptr + pid_n + 1) - first
    rows = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_B, BLOCK_N, W), tl.float32)
    for i0 in range(pid_k * BLOCK_B, count, SPLIT_K * BLOCK_B):
        ids = i0 + tl.arange(0, BLOCK_B)
        ok = ids < count
        blocks = (first + ids).to(tl.int64)
        cols = tl.load(col_ptr + blocks, mask=ok, other=0).to(tl.int32)
        meta = blocks[:, None] * BLOCK_N + rows[None, :]
        s = tl.load(scales_ptr + meta, mask=ok[:, None], other=0.0).to(tl.float32)
        m = tl.load(mins_ptr + meta, mask=ok[:, None], other=0.0).to(tl.float32)
        words = tl.load(q_ptr + meta[:, :, None] * W + tl.arange(0, W)[None, None, :], mask=ok[:, None, None],
                        other=0)
        kbase = cols[:, None] * BLOCK_K + 8 * tl.arange(0, W)[None, :]
        d = tl.zeros((BLOCK_B, BLOCK_N, W), tl.float32)
        xs = tl.zeros((BLOCK_B, W), tl.float32)
        for i in tl.static_range(8):
            xi = tl.load(x_ptr + (kbase + i) * stride_xk, mask=ok[:, None] & (kbase + i < K), other=0.0)
            xi = xi.to(tl.float32)
            d += nibble_as_float(words, i) * xi[:, None, :]
            xs += xi
        acc += (16 * s)[:, :, None] * d + (m - 16 * s)[:, :, None] * xs[:, None, :]
    out = tl.sum(tl.sum(acc, axis=2), axis=0)[None, :]
    store_result(out, out_ptr, bias_ptr, tl.arange(0, 1), pid_n * BLOCK_N + rows, 1, N, pid_k, HAS_BIAS, SPLIT_K,
                 ROUND_BF16)


@triton.jit
def pick(idx, x0, x1, x2, x3):
    """x_idx elementwise, idx in 0..3."""
    return tl.where(idx < 2, tl.where(idx == 0, x0, x1), tl.where(idx == 2, x2, x3))


@triton.jit
def nv24_decode_kernel(x_ptr, out_ptr, bias_ptr, values_ptr, meta_ptr, M, N, K, stride_xm, stride_xk,
                       HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr,
                       PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr):
    """values_ptr: int32 words (N, Kp / 4), one group of 4 inputs each; meta_ptr: uint8 (N, Kp / 8)."""
    B: tl.constexpr = BLOCK_K // 8  # meta bytes (pairs of groups) per K block
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    row_bytes = tl.cdiv(K, 8)
    steps = tl.cdiv(row_bytes, B)
    per_split = tl.cdiv(steps, SPLIT_K)
    half = tl.arange(0, 2)
    acc = tl.zeros((BLOCK_N, B, 2), tl.float32)
    for step in range(pid_k * per_split, tl.minimum(pid_k * per_split + per_split, steps)):
        pairs = step * B + tl.arange(0, B)
        ok = row_ok[:, None] & (pairs < row_bytes)[None, :]
        at = rows.to(tl.int64)[:, None] * row_bytes + pairs[None, :]
        meta = tl.load(meta_ptr + at, mask=ok, other=0).to(tl.int32)
        words = tl.load(values_ptr + at[:, :, None] * 2 + half[None, None, :], mask=ok[:, :, None], other=0)
        nibbles = (meta[:, :, None] >> (4 * half)[None, None, :]) & 0xF
        quads = 8 * pairs[:, None] + 4 * half[None, :]  # (B, 2): first input of each group
        x0 = tl.load(x_ptr + quads * stride_xk, mask=quads < K, other=0.0).to(tl.float32)[None]
        x1 = tl.load(x_ptr + (quads + 1) * stride_xk, mask=quads + 1 < K, other=0.0).to(tl.float32)[None]
        x2 = tl.load(x_ptr + (quads + 2) * stride_xk, mask=quads + 2 < K, other=0.0).to(tl.float32)[None]
        x3 = tl.load(x_ptr + (quads + 3) * stride_xk, mask=quads + 3 < K, other=0.0).to(tl.float32)[None]
        v0 = (words << 16).to(tl.float32, bitcast=True)
        v1 = (words & -65536).to(tl.float32, bitcast=True)
        acc += v0 * pick(nibbles & 3, x0, x1, x2, x3) + v1 * pick(nibbles >> 2, x0, x1, x2, x3)
    out = tl.sum(tl.sum(acc, axis=2), axis=1)[None, :]
    store_result(out, out_ptr, bias_ptr, tl.arange(0, 1), rows, 1, N, pid_k, HAS_BIAS, SPLIT_K, ROUND_BF16)


@triton.jit
def nv24_int4_decode_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, meta_ptr, M, N, K, stride_xm,
                            stride_xk, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr,
                            DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr,
                            GROUP: tl.constexpr):
    """q_ptr: int32 words (N, Kp / 16), 4 groups of 4 each; meta_ptr: int16 words (N, Kp / 16), the same 4."""
    SPAN: tl.constexpr = 2 * GROUP  # inputs per quantization group
    G: tl.constexpr = BLOCK_K // SPAN
    W: tl.constexpr = SPAN // 16
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    row_groups = tl.cdiv(K, SPAN)
    steps = tl.cdiv(row_groups, G)
    per_split = tl.cdiv(steps, SPLIT_K)
    acc = tl.zeros((BLOCK_N, G, W), tl.float32)
    for step in range(pid_k * per_split, tl.minimum(pid_k * per_split + per_split, steps)):
        groups = step * G + tl.arange(0, G)
        ok = row_ok[:, None] & (groups < row_groups)[None, :]
        at = rows.to(tl.int64)[:, None] * row_groups + groups[None, :]
        s = tl.load(scales_ptr + at, mask=ok, other=0.0).to(tl.float32)
        m = tl.load(mins_ptr + at, mask=ok, other=0.0).to(tl.float32)
        word_at = at[:, :, None] * W + tl.arange(0, W)[None, None, :]
        words = tl.load(q_ptr + word_at, mask=ok[:, :, None], other=0)
        meta = tl.load(meta_ptr + word_at, mask=ok[:, :, None], other=0).to(tl.int32)
        quad0 = 16 * (groups[:, None] * W + tl.arange(0, W)[None, :])  # (G, W): first input of the word
        d = tl.zeros((BLOCK_N, G, W), tl.float32)
        xs = tl.zeros((BLOCK_N, G, W), tl.float32)
        for j in tl.static_range(4):
            quad = quad0 + 4 * j
            x0 = tl.load(x_ptr + quad * stride_xk, mask=quad < K, other=0.0).to(tl.float32)[None]
            x1 = tl.load(x_ptr + (quad + 1) * stride_xk, mask=quad + 1 < K, other=0.0).to(tl.float32)[None]
            x2 = tl.load(x_ptr + (quad + 2) * stride_xk, mask=quad + 2 < K, other=0.0).to(tl.float32)[None]
            x3 = tl.load(x_ptr + (quad + 3) * stride_xk, mask=quad + 3 < K, other=0.0).to(tl.float32)[None]
            nibble = meta >> (4 * j)
            xa = pick(nibble & 3, x0, x1, x2, x3)
            xb = pick((nibble >> 2) & 3, x0, x1, x2, x3)
            d += nibble_as_float(words, 2 * j) * xa + nibble_as_float(words, 2 * j + 1) * xb
            xs += xa + xb
        acc += (16 * s)[:, :, None] * d + (m - 16 * s)[:, :, None] * xs
    out = tl.sum(tl.sum(acc, axis=2), axis=1)[None, :]
    store_result(out, out_ptr, bias_ptr, tl.arange(0, 1), rows, 1, N, pid_k, HAS_BIAS, SPLIT_K, ROUND_BF16)


KERNELS = {"int4": int4_decode_kernel, "nv24": nv24_decode_kernel, "nv24_int4": nv24_int4_decode_kernel,
           "bsr_int4": bsr_int4_decode_kernel}


def supports(layout: str, m: int, dtype: torch.dtype) -> bool:
    """M == 1, and NV24 only with bf16 values (the halves of a word shifted into fp32 are bf16's bits)."""
    return layout in LAYOUTS and m == 1 and (layout != "nv24" or dtype == torch.bfloat16)


def word_views(layout: str, tensors, dims) -> list[torch.Tensor]:
    """The packed tensors with the weight bytes (and NV24_INT4's meta) viewed as 32-bit (16-bit) words."""
    tensors = list(tensors)
    if layout == "int4":
        tensors[0] = tensors[0].view(torch.int32)
    elif layout == "nv24":
        tensors[0] = tensors[0].view(torch.int32)
    elif layout == "nv24_int4":
        tensors[0], tensors[3] = tensors[0].view(torch.int32), tensors[3].view(torch.int16)
    else:  # bsr_int4: (nnz, block_n, group / 2) bytes
        tensors[2] = tensors[2].view(torch.int32)
    return tensors


def block_k(layout: str, dims, config: Config) -> int:
    """Inputs per K block: a power of two of whole groups (the format's span), at most the padded K."""
    n, k, group = dims[0], dims[1], dims[2]
    span = {"int4": group, "nv24": 8, "nv24_int4": 2 * group}[layout]
    padded = triton.cdiv(k, span) * span
    return max(span, min(config.block_k, triton.next_power_of_2(padded)))


def program_count(layout: str, dims, config: Config) -> int:
    block_n = dims[3] if layout == "bsr_int4" else config.block_n
    return triton.cdiv(dims[0], block_n)


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (1, K) @ W.T + bias for an INT4, NV24, NV24_INT4 or BSR_INT4 weight."""
    n, k, group = dims[0], dims[1], dims[2]
    split = split_k if split_k is not None else max(1, config.split_k)
    if layout == "bsr_int4":
        tiling, constexprs = Tiling(1, dims[3], group, split), {"BLOCK_B": config.block_n}
    else:
        tiling = Tiling(1, config.block_n, block_k(layout, dims, config), split)
        constexprs = {} if layout == "nv24" else {"GROUP": group}
    if x2d.is_cuda:
        constexprs.update(num_warps=config.num_warps, num_stages=config.num_stages)
    return launch(KERNELS[layout], x2d, n, k, bias, tiling, word_views(layout, tensors, dims), (), constexprs, out,
                  partials)
