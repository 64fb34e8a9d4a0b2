"""What every sparc matmul kernel shares: the program grid, operand loads, the block product and the epilogue.

Each kernel computes out (M, N) = x (M, K) @ W.T + bias for one stored weight format. The output is cut into
(BLOCK_M x BLOCK_N) tiles; program (pid_mn, pid_k) owns one output tile and the pid_k-th of SPLIT_K slices of
the reduction. Per iteration it loads an x block (BLOCK_M x BLOCK_K), rebuilds the matching weight block
(BLOCK_N x BLOCK_K) in registers from the format's stored bytes, and accumulates their product in fp32:

    for each K block of this slice:            x block: 2 * BLOCK_M * BLOCK_K bytes (bf16)
        w = <format>_block(...)                weight block: whatever the format stores for it
        acc += x @ w.T                         tl.dot, or an FMA reduction when BLOCK_M == 1 (decode)

With SPLIT_K == 1 the program adds the bias and stores its tile in the activation dtype. Otherwise it writes
its fp32 partial tile to partials[pid_k], and `reduce_splits_kernel` sums the slices, adds the bias and casts.
Decode (small M) is memory-bound: split-K raises the number of programs to about twice the SM count, so every
SM streams weights. Launch grids depend only on M, N, K and the device (never on data): the kernels are safe
inside CUDA graphs and torch.compile.

Under the CPU interpreter values are upcast to fp32 right after every load (it mishandles bf16 arithmetic). On
the GPU the tile kernels pass x and weight blocks stored in the activation dtype straight to tl.dot
(`load_x_tile`), optionally as the swapped product w @ x.T (`accumulate`, SWAP), and order their programs in
groups of GROUP_M row blocks (`tile_position`); rebuilt weight blocks are computed in fp32 and rounded to the
activation dtype before the product, exactly like the reference. tl.dot runs on the tensor cores; fp32
activations use IEEE fp32 dots.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_wait

from .pdl import enabled as pdl_enabled

DOT_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}
MIN_STEPS_PER_SPLIT = 4  # K blocks each split-K slice keeps at least
REDUCE_BLOCK = 1024


@triton.jit
def load_x(x_ptr, offs_m, offs_k, M, K, stride_xm, stride_xk):
    """x[offs_m, offs_k] as fp32, zero outside (M, K)."""
    ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk
    mask = (offs_m < M)[:, None] & (offs_k < K)[None, :]
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def load_x_tile(x_ptr, offs_m, offs_k, M, K, stride_xm, stride_xk, UPCAST: tl.constexpr):
    """x[offs_m, offs_k], zero outside (M, K): in x's own dtype for the tensor cores, fp32 when UPCAST."""
    ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk
    x = tl.load(ptrs, mask=(offs_m < M)[:, None] & (offs_k < K)[None, :], other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def tile_position(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program `pid`: GROUP_M row blocks of x sweep each weight block column together, so
    the weight blocks and x rows in flight stay in L2."""
    grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * grid_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(grid_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % size_m, (pid % per_group) // size_m


@triton.jit
def round_to_bf16(v):
    """fp32 rounded to the nearest bf16 (ties to even), kept in fp32. Bit arithmetic, because the CPU
    interpreter's bf16 cast truncates."""
    bits = v.to(tl.uint32, bitcast=True)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)


@triton.jit
def accumulate(acc, x, w, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
               ROUND_BF16: tl.constexpr, SWAP: tl.constexpr = False):
    """acc (BLOCK_M, BLOCK_N) += x (BLOCK_M, BLOCK_K) @ w.T, w (BLOCK_N, BLOCK_K) rounded to DOT_DTYPE first
    (and to bf16 when ROUND_BF16). SWAP: acc is (BLOCK_N, BLOCK_M) and gets w @ x.T (the weight block is then
    the tensor cores' register operand)."""
    if ROUND_BF16:
        w = round_to_bf16(w)
    w = w.to(DOT_DTYPE)
    if USE_DOT:
        if SWAP:
            acc = tl.dot(w, tl.trans(x.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        else:
            acc = tl.dot(x.to(DOT_DTYPE), tl.trans(w), acc, input_precision=PRECISION)
    else:
        acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    return acc


@triton.jit
def store_result(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, pid_k, HAS_BIAS: tl.constexpr,
                 SPLIT_K: tl.constexpr, ROUND_BF16: tl.constexpr):
    """Write an output tile: bias added and cast when SPLIT_K == 1, else the fp32 partial of slice pid_k."""
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    rows = offs_m.to(tl.int64)
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        if ROUND_BF16:
            acc = round_to_bf16(acc)
        tl.store(out_ptr + rows[:, None] * N + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + (pid_k * M + rows)[:, None] * N + offs_n[None, :], acc, mask=mask)


@triton.jit
def reduce_splits_kernel(partials_ptr, bias_ptr, out_ptr, size, N, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
                         ROUND_BF16: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """out = sum over slices of partials (SPLIT_K, M, N) + bias, cast to the output dtype; size = M * N. With PDL
    (a dependent launch, `pdl`) it first waits for the slices."""
    if PDL:
        gdc_wait()
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < size
    acc = tl.zeros((BLOCK,), tl.float32)
    ptrs = partials_ptr + offs
    for _ in tl.static_range(SPLIT_K):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += size
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs % N, mask=mask, other=0.0).to(tl.float32)
    if ROUND_BF16:
        acc = round_to_bf16(acc)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@functools.cache
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@dataclasses.dataclass(frozen=True)
class Tiling:
    block_m: int
    block_n: int
    block_k: int
    split_k: int

    def grid(self, m: int, n: int) -> tuple[int, int]:
        return triton.cdiv(m, self.block_m) * triton.cdiv(n, self.block_n), self.split_k

    def constexprs(self, x: torch.Tensor) -> dict:
        """Block sizes and product settings as kernel keyword arguments."""
        dot_dtype = DOT_DTYPES[x.dtype] if x.is_cuda else tl.float32  # the CPU interpreter computes in fp32
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_K=self.block_k, SPLIT_K=self.split_k,
                    USE_DOT=self.block_m >= 16 and self.block_n >= 16 and self.block_k >= 16,
                    DOT_DTYPE=dot_dtype, PRECISION="ieee" if dot_dtype == tl.float32 else "tf32",
                    ROUND_BF16=interpreted_bf16(x))


def interpreted_bf16(x: torch.Tensor) -> bool:
    """bf16 on the CPU interpreter, whose bf16 casts truncate: the kernels round with bit arithmetic instead."""
    return not x.is_cuda and x.dtype == torch.bfloat16


def block_m_for(m: int) -> int:
    """Decode (M == 1) runs the FMA path; otherwise tl.dot with 16 to 64 rows per program."""
    return 1 if m == 1 else min(64, max(16, triton.next_power_of_2(m)))


def choose_tiling(x2d: torch.Tensor, n: int, k_steps: int, block_n: int, block_k: int,
                  split_k: int | None = None, block_m: int | None = None) -> Tiling:
    """Tiles for an (M, K) x (K, N) product of `k_steps` K blocks; split-K fills the GPU at small M."""
    block_m = block_m or block_m_for(x2d.shape[0])
    if split_k is None:
        split_k = 1
        if x2d.is_cuda:
            programs = triton.cdiv(x2d.shape[0], block_m) * triton.cdiv(n, block_n)
            wanted = 2 * sm_count(x2d.device.index or 0) // programs
            split_k = max(1, min(wanted, k_steps // MIN_STEPS_PER_SPLIT))
    return Tiling(block_m, block_n, block_k, split_k)


def output_buffers(x2d: torch.Tensor, n: int, tiling: Tiling, out=None, partials=None):
    """(out (M, N) in the activation dtype, fp32 partials (SPLIT_K, M, N) or None); shapes only, never data."""
    m = x2d.shape[0]
    if out is None:
        out = torch.empty(m, n, dtype=x2d.dtype, device=x2d.device)
    if tiling.split_k > 1 and partials is None:
        partials = torch.empty(tiling.split_k, m, n, dtype=torch.float32, device=x2d.device)
    if out.shape != (m, n) or out.dtype != x2d.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous ({m}, {n}) {x2d.dtype} tensor")
    if tiling.split_k > 1 and (partials.shape != (tiling.split_k, m, n) or partials.dtype != torch.float32
                               or not partials.is_contiguous()):
        raise ValueError(f"partials must be a contiguous ({tiling.split_k}, {m}, {n}) float32 tensor")
    return out, partials


def register_cap(config) -> dict:
    """The launch option that caps a thread's registers (ptxas's maxnreg), if the config sets one."""
    return {"maxnreg": config.max_registers} if config.max_registers else {}


def launch(kernel, x2d: torch.Tensor, n: int, k: int, bias, tiling: Tiling, pointers, extra_args, constexprs,
           out=None, partials=None, dependent: bool = False, x_arg=None) -> torch.Tensor:
    """Run `kernel` over the output grid (then the split-K reduction) and return out (M, N).

    The kernel's arguments: x (or `x_arg`, such as x's TMA descriptor), out (or partials), bias, `pointers`,
    M, N, K, x's strides, `extra_args`, then the tiling's constexprs, HAS_BIAS and `constexprs`; a `dependent`
    kernel also takes PDL and, where the device has it, launches dependently (`pdl`)."""
    m = x2d.shape[0]
    out, partials = output_buffers(x2d, n, tiling, out, partials)
    target = out if tiling.split_k == 1 else partials
    pdl = pdl_enabled(x2d)
    if dependent:
        constexprs = dict(constexprs, PDL=pdl, launch_pdl=pdl)
    with torch.cuda.device(x2d.device) if x2d.is_cuda else contextlib.nullcontext():
        kernel[tiling.grid(m, n)](x2d if x_arg is None else x_arg, target, bias, *pointers, m, n, k, x2d.stride(0),
                                  x2d.stride(1), *extra_args, HAS_BIAS=bias is not None, **tiling.constexprs(x2d),
                                  **constexprs)
        if tiling.split_k > 1:
            grid = (triton.cdiv(m * n, REDUCE_BLOCK),)
            reduce_splits_kernel[grid](partials, bias, out, m * n, n, HAS_BIAS=bias is not None,
                                       SPLIT_K=tiling.split_k, ROUND_BF16=interpreted_bf16(x2d), BLOCK=REDUCE_BLOCK,
                                       PDL=pdl, launch_pdl=pdl)
    return out
