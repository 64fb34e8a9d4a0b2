"""Decode kernels: x (M, K) @ W.T + bias for M <= 16, weights streamed once, for INT4, NV24, NV24_INT4, BSR_INT4.

M == 1 normally runs `decode` (word loads); here it runs only NV24 with fp16 or fp32 values.

At decode the product is bound by the weight bytes: a 4096 x 4096 INT4 layer is 8.9 MB against 8 KB of x. These
kernels read each stored byte once, with wide contiguous loads along each weight row, and never rebuild a dense
weight block in input order. The activations are tiny and stay in L1; they are loaded in the order the format
stores its weights instead.

Kernel guide. Program (pid_n, pid_k) owns BLOCK_N output rows and the pid_k-th of SPLIT_K slices of the
reduction (for BSR_INT4: one block row and every SPLIT_K-th of its kept blocks, the row pointers read on the
device). Per K block of BLOCK_K inputs it loads, for its BLOCK_N rows:

    int4       BLOCK_K / 2 bytes a row, one contiguous run (BLOCK_K / GROUP whole groups), and one scale and
               minimum per group, broadcast over the group's BLOCK_K / 2 / G nibble pairs (loaded as a
               (BLOCK_N, G, GROUP / 2) tile). Low nibbles hold the even inputs, high nibbles the odd ones: the
               two halves multiply x[k0::2] and x[k0 + 1::2], so nibbles are never interleaved back.
    nv24       BLOCK_K / 2 values a row (the two kept values v0, v1 of each group of 4) and BLOCK_K / 8 meta
               bytes, one 4-bit index nibble per group.
    nv24_int4  BLOCK_K / 4 bytes a row (v0 in the low nibble, v1 in the high one), one scale and minimum per
               quantization group of 2 * GROUP inputs, and the meta bytes as nv24.
    bsr_int4   one stored (block_n x group) block: group / 2 contiguous bytes a row, one scale and minimum a row.

and the x values that meet them. M == 1 (BLOCK_M == 1) multiplies on the FMA units: acc[n] += sum over the
block of w[n, j] * x[k(j)], a broadcast product reduced with tl.sum. INT4 and BSR_INT4 sum per group first,
s * sum(q * x) + m * sum(x), so the scale and minimum cost one FMA per group; for NV24 and NV24_INT4, k(j) is the kept
position, x[4g + idx] picked among the group's four x values with three selects (no dense weight is built).
2 <= M <= 16 (BLOCK_M == 16) feeds the same weight pieces to tl.dot against the matching strided x columns
(x[:, k0 + i::4] @ w_i.T for the four NV24 positions i), so every weight byte is loaded once for all rows of x.
Accumulation is fp32; the epilogue (bias, cast, or fp32 partials summed by the split-K reduction) is `tiling`'s.
Launch grids depend only on M, N, K and the device: safe inside CUDA graphs and torch.compile.
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from .nv24 import load_nibbles
from .tiling import choose_tiling, launch, load_x, store_result

LAYOUTS = ("int4", "nv24", "nv24_int4", "bsr_int4")
MAX_M = 16


@dataclasses.dataclass(frozen=True)
class Config:
    """Rows per program and inputs per K block (raised to the format's group span; BSR_INT4 takes both from its
    layout) and launch options."""
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


# (layout, M == 1) -> Config
CONFIGS = {  # the fastest on an H100 over 4096x4096, 14336x4096 and 4096x14336 (bf16, group 128)
    ("int4", True): Config(64, 128, 4), ("int4", False): Config(128, 128, 8),
    ("nv24", True): Config(64, 256, 8), ("nv24", False): Config(128, 128, 4),
    ("nv24_int4", True): Config(16, 1024, 4), ("nv24_int4", False): Config(128, 256, 8),
    ("bsr_int4", True): Config(16, 128, 8), ("bsr_int4", False): Config(16, 128, 4),
}


@triton.jit
def strided_product(acc, w, x_ptr, offs_m, k0, M, K, stride_xm, stride_xk, STRIDE: tl.constexpr,
                    PHASE: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr,
                    PRECISION: tl.constexpr):
    """acc (BLOCK_M, BLOCK_N) += x[:, k0 + PHASE :: STRIDE] @ w.T for w (BLOCK_N, BLOCK_K / STRIDE)."""
    offs_k = k0 + PHASE + STRIDE * tl.arange(0, BLOCK_K // STRIDE)
    x = load_x(x_ptr, offs_m, offs_k, M, K, stride_xm, stride_xk)
    if USE_DOT:
        acc = tl.dot(x.to(DOT_DTYPE), tl.trans(w.to(DOT_DTYPE)), acc, input_precision=PRECISION)
    else:
        acc += tl.sum(w * x, axis=1)[None, :]
    return acc


@triton.jit
def pick(idx, x0, x1, x2, x3):
    """x_idx elementwise, idx in 0..3."""
    return tl.where(idx < 2, tl.where(idx == 0, x0, x1), tl.where(idx == 2, x2, x3))


@triton.jit
def kept_product(acc, v0, v1, nibbles, x_ptr, offs_m, k0, M, K, stride_xm, stride_xk, BLOCK_K: tl.constexpr,
                 USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """acc += x[:, k0 : k0 + BLOCK_K] @ w.T for the 2:4 block whose group g keeps v0[:, g] at input 4g + (low 2
    bits of nibbles[:, g]) and v1[:, g] at 4g + (high 2 bits); v0, v1, nibbles (BLOCK_N, BLOCK_K / 4)."""
    low, high = nibbles & 3, nibbles >> 2
    if USE_DOT:
        for i in tl.static_range(4):
            w = tl.where(low == i, v0, tl.where(high == i, v1, 0.0))
            acc = strided_product(acc, w, x_ptr, offs_m, k0, M, K, stride_xm, stride_xk, 4, i, BLOCK_K, USE_DOT,
                                  DOT_DTYPE, PRECISION)
    else:
        quads = k0 + 4 * tl.arange(0, BLOCK_K // 4)
        x0 = load_x(x_ptr, offs_m, quads, M, K, stride_xm, stride_xk)
        x1 = load_x(x_ptr, offs_m, quads + 1, M, K, stride_xm, stride_xk)
        x2 = load_x(x_ptr, offs_m, quads + 2, M, K, stride_xm, stride_xk)
        x3 = load_x(x_ptr, offs_m, quads + 3, M, K, stride_xm, stride_xk)
        acc += tl.sum(v0 * pick(low, x0, x1, x2, x3) + v1 * pick(high, x0, x1, x2, x3), axis=1)[None, :]
    return acc


@triton.jit
def dequantize_groups(q_ptr, scales_ptr, mins_ptr, rows, row_ok, row_groups, g0, BLOCK_N: tl.constexpr,
                      G: tl.constexpr, GROUP_BYTES: tl.constexpr):
    """(low, high) nibbles dequantized, each (BLOCK_N, G * GROUP_BYTES) fp32: groups g0 .. g0 + G of rows of
    `row_groups` groups of GROUP_BYTES bytes, one scale and minimum per group."""
    groups = g0 + tl.arange(0, G)
    ok = row_ok[:, None] & (groups < row_groups)[None, :]
    meta = rows.to(tl.int64)[:, None] * row_groups + groups[None, :]
    scales = tl.load(scales_ptr + meta, mask=ok, other=0.0).to(tl.float32)[:, :, None]
    mins = tl.load(mins_ptr + meta, mask=ok, other=0.0).to(tl.float32)[:, :, None]
    ptrs = q_ptr + meta[:, :, None] * GROUP_BYTES + tl.arange(0, GROUP_BYTES)[None, None, :]
    packed = tl.load(ptrs, mask=ok[:, :, None], other=0)
    low = (packed & 0xF).to(tl.float32) * scales + mins
    high = (packed >> 4).to(tl.float32) * scales + mins
    return tl.reshape(low, (BLOCK_N, G * GROUP_BYTES)), tl.reshape(high, (BLOCK_N, G * GROUP_BYTES))


@triton.jit
def group_sums(q_ptr, scales_ptr, mins_ptr, x_ptr, rows, row_ok, row_groups, g0, k0, K, stride_xk,
               G: tl.constexpr, GROUP_BYTES: tl.constexpr):
    """sum over groups g0 .. g0 + G of s * sum(q * x) + m * sum(x), (BLOCK_N,) fp32: the M == 1 product of an
    int4 block (groups of GROUP_BYTES bytes, even inputs in the low nibbles) with x[k0 :], one scale and minimum
    applied per group instead of per weight."""
    groups = g0 + tl.arange(0, G)
    ok = row_ok[:, None] & (groups < row_groups)[None, :]
    meta = rows.to(tl.int64)[:, None] * row_groups + groups[None, :]
    scales = tl.load(scales_ptr + meta, mask=ok, other=0.0).to(tl.float32)
    mins = tl.load(mins_ptr + meta, mask=ok, other=0.0).to(tl.float32)
    packed = tl.load(q_ptr + meta[:, :, None] * GROUP_BYTES + tl.arange(0, GROUP_BYTES)[None, None, :],
                     mask=ok[:, :, None], other=0)
    offs_k = k0 + 2 * (GROUP_BYTES * tl.arange(0, G)[:, None] + tl.arange(0, GROUP_BYTES)[None, :])
    x_even = tl.load(x_ptr + offs_k * stride_xk, mask=offs_k < K, other=0.0).to(tl.float32)
    x_odd = tl.load(x_ptr + (offs_k + 1) * stride_xk, mask=offs_k + 1 < K, other=0.0).to(tl.float32)
    dots = tl.sum((packed & 0xF).to(tl.float32) * x_even[None] + (packed >> 4).to(tl.float32) * x_odd[None], axis=2)
    return tl.sum(dots * scales + mins * tl.sum(x_even + x_odd, axis=1)[None, :], axis=1)


@triton.jit
def int4_product(acc, q_ptr, scales_ptr, mins_ptr, x_ptr, offs_m, rows, row_ok, row_groups, g0, k0, M, K,
                 stride_xm, stride_xk, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr,
                 USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """acc += x[:, k0 : k0 + BLOCK_K] @ w.T for the int4 groups g0 .. g0 + BLOCK_K / GROUP of `rows`."""
    if USE_DOT:
        even, odd = dequantize_groups(q_ptr, scales_ptr, mins_ptr, rows, row_ok, row_groups, g0, BLOCK_N,
                                      BLOCK_K // GROUP, GROUP // 2)
        acc = strided_product(acc, even, x_ptr, offs_m, k0, M, K, stride_xm, stride_xk, 2, 0, BLOCK_K, USE_DOT,
                              DOT_DTYPE, PRECISION)
        acc = strided_product(acc, odd, x_ptr, offs_m, k0, M, K, stride_xm, stride_xk, 2, 1, BLOCK_K, USE_DOT,
                              DOT_DTYPE, PRECISION)
    else:
        acc += group_sums(q_ptr, scales_ptr, mins_ptr, x_ptr + offs_m.to(tl.int64) * stride_xm, rows, row_ok,
                          row_groups, g0, k0, K, stride_xk, BLOCK_K // GROUP, GROUP // 2)[None, :]
    return acc


@triton.jit
def program_slice(N, K, SPAN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  SPLIT_K: tl.constexpr):
    """(offs_m, offs_n, first and end K block) of this program; rows are K padded to SPAN long."""
    pid_mn, pid_k = tl.program_id(0), tl.program_id(1)
    n_blocks = tl.cdiv(N, BLOCK_N)
    offs_m = (pid_mn // n_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = (pid_mn % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    steps = tl.cdiv(tl.cdiv(K, SPAN) * SPAN, BLOCK_K)
    per_split = tl.cdiv(steps, SPLIT_K)
    return offs_m, offs_n, pid_k * per_split, tl.minimum(pid_k * per_split + per_split, steps)


@triton.jit
def int4_gemv_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk,
                     HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
                     ROUND_BF16: tl.constexpr, GROUP: tl.constexpr):
    offs_m, offs_n, first, end = program_slice(N, K, GROUP, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K)
    row_groups = tl.cdiv(K, GROUP)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for step in range(first, end):
        k0 = step * BLOCK_K
        acc = int4_product(acc, q_ptr, scales_ptr, mins_ptr, x_ptr, offs_m, offs_n, offs_n < N, row_groups, k0 // GROUP,
                           k0, M, K, stride_xm, stride_xk, BLOCK_N, BLOCK_K, GROUP, USE_DOT, DOT_DTYPE, PRECISION)
    store_result(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, tl.program_id(1), HAS_BIAS, SPLIT_K, ROUND_BF16)


@triton.jit
def nv24_gemv_kernel(x_ptr, out_ptr, bias_ptr, values_ptr, meta_ptr, M, N, K, stride_xm, stride_xk,
                     HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
                     ROUND_BF16: tl.constexpr):
    offs_m, offs_n, first, end = program_slice(N, K, 8, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K)
    padded = tl.cdiv(K, 8) * 8
    row_ok = offs_n < N
    row_start = offs_n.to(tl.int64) * padded
    pairs = tl.arange(0, BLOCK_K // 2)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for step in range(first, end):
        k0 = step * BLOCK_K
        ptrs = values_ptr + (row_start // 2)[:, None] + (k0 // 2 + pairs)[None, :]
        values = tl.load(ptrs, mask=row_ok[:, None] & (k0 + 2 * pairs < padded)[None, :], other=0.0)
        v0, v1 = tl.split(tl.reshape(values.to(tl.float32), (BLOCK_N, BLOCK_K // 4, 2)))
        nibbles = load_nibbles(meta_ptr, row_start, row_ok, padded, k0, BLOCK_N, BLOCK_K)
        acc = kept_product(acc, v0, v1, nibbles, x_ptr, offs_m, k0, M, K, stride_xm, stride_xk, BLOCK_K, USE_DOT,
                           DOT_DTYPE, PRECISION)
    store_result(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, tl.program_id(1), HAS_BIAS, SPLIT_K, ROUND_BF16)


@triton.jit
def nv24_int4_gemv_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, meta_ptr, M, N, K, stride_xm,
                          stride_xk, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr,
                          DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr,
                          GROUP: tl.constexpr):
    # a quantization group of GROUP kept values spans 2 * GROUP inputs
    offs_m, offs_n, first, end = program_slice(N, K, 2 * GROUP, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K)
    row_groups = tl.cdiv(K, 2 * GROUP)
    row_ok = offs_n < N
    row_start = offs_n.to(tl.int64) * (row_groups * 2 * GROUP)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for step in range(first, end):
        k0 = step * BLOCK_K
        v0, v1 = dequantize_groups(q_ptr, scales_ptr, mins_ptr, offs_n, row_ok, row_groups, k0 // (2 * GROUP),
                                   BLOCK_N, BLOCK_K // (2 * GROUP), GROUP // 2)
        nibbles = load_nibbles(meta_ptr, row_start, row_ok, row_groups * 2 * GROUP, k0, BLOCK_N, BLOCK_K)
        acc = kept_product(acc, v0, v1, nibbles, x_ptr, offs_m, k0, M, K, stride_xm, stride_xk, BLOCK_K, USE_DOT,
                           DOT_DTYPE, PRECISION)
    store_result(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, tl.program_id(1), HAS_BIAS, SPLIT_K, ROUND_BF16)


@triton.jit
def bsr_int4_gemv_kernel(x_ptr, out_ptr, bias_ptr, row_ptr, col_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K,
                         stride_xm, stride_xk, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr,
                         DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr):
    """BLOCK_N = block_n and BLOCK_K = group: one stored block, BLOCK_N rows of one group, per iteration."""
    pid_mn, pid_k = tl.program_id(0), tl.program_id(1)
    n_blocks = tl.cdiv(N, BLOCK_N)
    block_row = pid_mn % n_blocks
    offs_m = (pid_mn // n_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = tl.arange(0, BLOCK_N)
    first = tl.load(row_ptr + block_row)
    last = tl.load(row_ptr + block_row + 1)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for block in range(first + pid_k, last, SPLIT_K):
        k0 = tl.load(col_ptr + block).to(tl.int32) * BLOCK_K
        # the stored block: BLOCK_N rows of one group each, group rows block * BLOCK_N + r
        acc = int4_product(acc, q_ptr, scales_ptr, mins_ptr, x_ptr, offs_m, block * BLOCK_N + rows, rows < BLOCK_N, 1,
                           0, k0, M, K, stride_xm, stride_xk, BLOCK_N, BLOCK_K, BLOCK_K, USE_DOT,
                           DOT_DTYPE, PRECISION)
    offs_n = block_row * BLOCK_N + rows
    store_result(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, pid_k, HAS_BIAS, SPLIT_K, ROUND_BF16)


KERNELS = {"int4": int4_gemv_kernel, "nv24": nv24_gemv_kernel, "nv24_int4": nv24_int4_gemv_kernel,
           "bsr_int4": bsr_int4_gemv_kernel}


def supports(layout: str, m: int) -> bool:
    return layout in LAYOUTS and m <= MAX_M


def block_sizes(layout: str, dims, config: Config) -> tuple[int, int, dict]:
    """(BLOCK_N, BLOCK_K, format constexprs); BLOCK_K is at least the format's group span."""
    group = dims[2]
    if layout == "bsr_int4":
        return dims[3], group, {}
    if layout == "nv24":
        return config.block_n, config.block_k, {}
    span = group if layout == "int4" else 2 * group
    return config.block_n, max(config.block_k, span), {"GROUP": group}


def default_config(layout: str, m: int) -> Config:
    return CONFIGS[layout, m == 1]


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config | None = None, split_k=None,
           out=None, partials=None):
    """x2d (M, K) @ W.T + bias, M <= 16, for an INT4, NV24, NV24_INT4 or BSR_INT4 weight."""
    n, k = dims[0], dims[1]
    m = x2d.shape[0]
    config = config or default_config(layout, m)
    block_n, block_k, constexprs = block_sizes(layout, dims, config)
    steps = triton.cdiv(k, dims[2]) if layout == "bsr_int4" else triton.cdiv(k, block_k)
    tiling = choose_tiling(x2d, n, steps, block_n, block_k, split_k)
    options = dict(num_warps=config.num_warps, num_stages=config.num_stages) if x2d.is_cuda else {}
    return launch(KERNELS[layout], x2d, n, k, bias, tiling, tensors, (), {**constexprs, **options}, out, partials)
