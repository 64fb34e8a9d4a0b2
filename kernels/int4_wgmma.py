"""INT4 at 17 to 256 rows of x on Hopper: the weight dequantized straight into the registers of the A operand of
the warpgroup mma (wgmma, Gluon), x staged through shared memory as its B operand.

`int4_mma` keeps x in registers, which caps it at 16 rows. Here the product is still transposed, out.T = W @
x.T, and K is renumbered inside each 128-input chunk exactly as there (`int4_mma.renumbered`): each thread's 16
contiguous bytes of words become its A registers by a renaming. A warpgroup owns 64 weight rows, 16 a warp, in
m16n8k16's A fragment, which is also wgmma's. x takes the same renumbering on its way to shared memory: a thread
loads 8 contiguous inputs at a time (16-byte loads of input bits 0-2) for input bits 5 and 6 of a row, so that
once renumbered it holds 32 consecutive k and stores them with four 16-byte stores into the swizzled tile that
wgmma reads (NVMMASharedLayout, 128-byte swizzle).

Per 128-input step: the next step's words, scales, minimums and x are loaded into registers; this step's words
are dequantized (`int4_mma.dequantize`, about 2 instructions a weight) and one asynchronous wgmma of BLOCK_M
columns and K = 128 is issued on x's tile; while it runs, the next x tile goes to the other shared buffer; then
the program waits for the wgmma and crosses a CTA barrier (the next wgmma reads what every warp stored). No
register of an A operand changes while its wgmma runs: ptxas would serialize every wgmma of the kernel.
Program (pid, pid_k) owns BLOCK_N weight rows (64 a warpgroup, more repeat in registers), BLOCK_M x rows and the
pid_k-th of SPLIT_K slices of K; the epilogue is `int4_mma`'s. A config with shared-memory stages runs the
warp-specialized variant instead (`int4_wgmma_ws`), whose dequantization overlaps its wgmma; the tuner weighs
both, and past 64 rows also the rebuild and cuBLAS, which win past 256 (RESULTS.md). Gluon does not run under
TRITON_INTERPRET: on the CPU the tile kernel runs, and tests/test_int4_wgmma.py compiles both for sm_90 on any
machine.
"""
from __future__ import annotations

import dataclasses
import itertools

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper

from .int4_mma import MAX_M as MMA_MAX_M
from .int4_mma import (as_operand_a, bits, dequantize, operand_layouts, renumbered, step_range, store_transposed,
                       weight_loads, word_offsets)
from . import int4_wgmma_ws
from .pdl import release_dependents, wait_for_inputs
from .tiling import Tiling, launch, register_cap, sm_count

MIN_M, MAX_M = MMA_MAX_M + 1, 256
DTYPES = (torch.bfloat16, torch.float16)
BLOCK_K = 128  # one renumbered chunk a step
# (x rows, weight rows, warps, register cap or 0) a program: the shapes whose registers fit without spilling;
# 64 x 128 in 128 registers a thread puts two programs on an SM
SHAPES = [(32, 64, 4, 0), (32, 128, 8, 0), (32, 256, 8, 0), (64, 64, 4, 0), (64, 128, 8, 0), (64, 128, 8, 128),
          (64, 256, 8, 0), (128, 128, 8, 0)]
# (x rows, weight rows, warps that multiply, weight stages, warps that dequantize) of `int4_wgmma_ws`'s programs,
# one an SM: x's stages fill the rest of its shared memory
WS_SHAPES = [(32, 128, 4, 4, 4), (64, 64, 4, 4, 4), (64, 128, 4, 4, 4), (64, 128, 4, 4, 8), (128, 64, 4, 4, 4),
             (128, 128, 4, 3, 4), (128, 128, 4, 3, 8), (128, 128, 8, 3, 4), (256, 128, 8, 2, 4)]
cta_barrier = gl.barrier if hasattr(gl, "barrier") else gl.thread_barrier  # triton 3.7 renamed it


@dataclasses.dataclass(frozen=True)
class Config:
    """x rows a program (wgmma's N; fewer when M needs fewer), weight rows a program, split-K slices (0: as many
    as give every SM a program), warps (a warpgroup per 64 weight rows at most), the registers a thread may
    use (0: as many as the compiler takes), and for the warp-specialized kernel (`int4_wgmma_ws`; stages 0:
    this module's kernel) its weight stages and the warps that dequantize (num_warps multiply)."""
    block_m: int
    block_n: int
    split_k: int = 0
    num_warps: int = 8
    max_registers: int = 0
    stages: int = 0
    producers: int = 0


def block_m_for(m: int, most: int) -> int:
    return min(most, max(32, 1 << (m - 1).bit_length()))


def default(layout: str, m: int) -> Config:
    return Config(block_m_for(m, 64), 256, 0, 8)


def supports(layout: str, x2d: torch.Tensor, tensors=None) -> bool:
    """INT4 products of MIN_M to MAX_M rows of bf16 or fp16 x on a Hopper GPU, scales stored in x's dtype, K a
    multiple of 8 (x's 16-byte loads)."""
    if layout != "int4" or not (MIN_M <= x2d.shape[0] <= MAX_M and x2d.is_cuda and x2d.dtype in DTYPES):
        return False
    scales = None if tensors is None else tensors[1]
    return (x2d.shape[1] % 8 == 0 and torch.cuda.get_device_capability(x2d.device)[0] == 9
            and (scales is None or scales.dtype == x2d.dtype))


def candidates(layout: str, m: int) -> list[Config]:
    """The configs SPARC_AUTOTUNE=1 times: SHAPES and WS_SHAPES up to the x rows M needs, times split-K. The
    warp-specialized kernel's fixed splits never beat its SM fill (split 0) beyond the spread on the H100
    (RESULTS.md), and the fill adapts to every M of the bucket: it tries only 0 and 1."""
    most = block_m_for(m, 256)
    return ([Config(bm, bn, split, warps, registers) for (bm, bn, warps, registers), split
             in itertools.product(SHAPES, (0, 1, 2, 4)) if bm <= min(most, 128)]
            + [Config(bm, bn, split, warps, 0, stages, producers) for (bm, bn, warps, stages, producers), split
               in itertools.product(WS_SHAPES, (0, 1)) if bm <= most])


def x_layout(block_m: int, num_warps: int):
    """LX over a step of x (BLOCK_M, 128 inputs): a thread holds input bits 0-2 (one 16-byte load) and 5-6 of a
    row, the lanes input bits 3-4 and row bits 0-2, the warps the next row bits (warps past BLOCK_M / 8 load the
    same rows), more rows repeat in registers. Renumbered, a thread's 32 values of a row are 32 consecutive k."""
    warp_rows = [[8 << i, 0] if 8 << i < block_m else [0, 0] for i in bits(num_warps)]
    more_rows = [[8 * num_warps << i, 0] for i in bits(block_m // (8 * num_warps))]
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [0, 4], [0, 32], [0, 64]] + more_rows,
        lane_bases=[[0, 8], [0, 16], [1, 0], [2, 0], [4, 0]], warp_bases=warp_rows, block_bases=[],
        shape=[block_m, 128])


def layouts(block_m: int, block_n: int, group: int, num_warps: int):
    """(LW over the words as in `int4_mma`, LX over x, the wgmma layout of the accumulator (BLOCK_N, BLOCK_M),
    x's shared tile)."""
    lw, _, _ = operand_layouts(block_n, BLOCK_K, 16, group, num_warps)
    mma = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, block_m, 16])
    shared = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    return lw, x_layout(block_m, num_warps), mma, shared


@gluon.jit
def x_step(x_ptr, x_at, x_ok, cols, step, K):
    """x (BLOCK_M, 128) of step `step`, zero past K and where not x_ok, renumbered (k order)."""
    at = step * 128 + gl.expand_dims(cols, 0)
    x = gl.load(x_ptr + x_at + at, mask=x_ok & (at < K), other=0.0)
    return gl.reshape(renumbered(x), [x.shape[0], x.shape[1]])


@gluon.jit
def int4_wgmma_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk,
                      HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                      SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr,
                      PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr, GROUP: gl.constexpr, LW: gl.constexpr,
                      LX: gl.constexpr, MMA: gl.constexpr, XS: gl.constexpr, PDL: gl.constexpr):
    """q_ptr: int32 words (N, Kp / 8) of the INT4 weight; scales and mins (N, Kp / GROUP) as int16; x (M, K)
    contiguous along K. `tiling.launch`'s arguments plus the layouts of `layouts`."""
    wait_for_inputs(PDL)
    G: gl.constexpr = BLOCK_K // GROUP
    W: gl.constexpr = GROUP // 8
    dtype: gl.constexpr = x_ptr.dtype.element_ty
    grid_m = gl.cdiv(M, BLOCK_M)
    pid_m, pid_n = gl.program_id(0) % grid_m, gl.program_id(0) // grid_m
    first, end = step_range(K, BLOCK_K, SPLIT_K)
    groups, sm_at, word_at, row_ok, row_groups = word_offsets(pid_n, first, N, K, BLOCK_N, G, GROUP, LW)
    x_rows = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, LX))
    x_at = gl.expand_dims(x_rows.to(gl.int64) * stride_xm, 1)
    x_ok = gl.expand_dims(x_rows < M, 1)
    cols = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, LX))

    xs = gl.allocate_shared_memory(dtype, [2, BLOCK_M, BLOCK_K], XS)
    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
    s2, m2, words = weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at, word_at,
                                 row_ok & gl.expand_dims(groups < row_groups, 0))
    xs.index(0).store(x_step(x_ptr, x_at, x_ok, cols, first, K))
    hopper.fence_async_shared()
    cta_barrier()
    for step in range(first, end):
        ahead = step + 1 - first
        live = step + 1 < end
        s2_n, m2_n, words_n = weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at + ahead * G, word_at + ahead * (G * W),
                                           row_ok & gl.expand_dims((groups + ahead * G < row_groups) & live, 0))
        x_n = x_step(x_ptr, x_at, x_ok & live, cols, step + 1, K)
        a = as_operand_a(dequantize(words, s2, m2, dtype), MMA)
        acc = hopper.warpgroup_mma(a, xs.index((ahead + 1) % 2).permute((1, 0)), acc, is_async=True)
        xs.index(ahead % 2).store(x_n)
        hopper.fence_async_shared()
        acc, a = hopper.warpgroup_mma_wait(0, deps=[acc, a])
        cta_barrier()
        s2, m2, words = s2_n, m2_n, words_n
    release_dependents(PDL)
    store_transposed(acc, out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M, BLOCK_N, SPLIT_K, MMA)


def split_for(config: Config, programs: int, steps: int, device) -> int:
    """config.split_k, or (0) the slices that give every SM a program, at most one a K step."""
    if config.split_k:
        return config.split_k
    return max(1, min(sm_count(device.index or 0) // programs, steps))


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (M, K) @ W.T + bias for an INT4 weight, MIN_M <= M <= MAX_M."""
    n, k, group = dims[0], dims[1], dims[2]
    qweight, scales, mins = tensors
    block_m = block_m_for(x2d.shape[0], config.block_m)
    if split_k is None:
        programs = -(-x2d.shape[0] // block_m) * -(-n // config.block_n)
        split_k = split_for(config, programs, -(-k // BLOCK_K), x2d.device)
    if config.stages:
        return int4_wgmma_ws.matmul(x2d, tensors, dims, bias, block_m, config, split_k, out, partials)
    lw, lx, mma, shared = layouts(block_m, config.block_n, group, config.num_warps)
    tiling = Tiling(block_m, config.block_n, BLOCK_K, split_k)
    x = x2d if x2d.stride(1) == 1 else x2d.contiguous()
    pointers = [qweight.view(torch.int32), scales.view(torch.int16), mins.view(torch.int16)]
    return launch(int4_wgmma_kernel, x, n, k, bias, tiling, pointers, (),
                  dict(GROUP=group, LW=lw, LX=lx, MMA=mma, XS=shared, num_warps=config.num_warps,
                       **register_cap(config)), out, partials, dependent=True)
