"""INT4 on Hopper's warpgroup mma with warp specialization: warps that dequantize feed warps that multiply
through rings of shared-memory stages.

`int4_wgmma` runs every step in one sequence: wait for the loads, dequantize, one wgmma, wait for it, barrier.
Its tensor cores idle while the weight is dequantized, and its dequantization idles while they run. Here the
two run side by side in separate warps:

- the producer (PRODUCERS warps) loads a step's words, scales and minimums one step ahead in registers,
  dequantizes them (`dequantize_in_order`, about 2.5 instructions a weight) and stores the weight block
  (BLOCK_N, 128) in x's dtype into the step's stage in input order (16-byte stores);
- the consumer (the kernel's num_warps, a warpgroup per 64 weight rows) waits for a weight stage, then per
  half of it for x's (BLOCK_M, 64) block, and issues one asynchronous wgmma on the two from shared memory;
  once the wgmma before it retires, it releases that one's weight stage (after its second half) and asks the
  TMA engine for the x block X_STAGES halves ahead into that one's x stage (zero past M and K). So one wgmma
  is always in flight, the producer may run STAGES - 1 steps ahead, and x is asked for X_STAGES - 1 halves
  ahead: x stages are as many as SHARED_BYTES holds next to the weights' (4 for 256 x rows, against 2 when a
  stage held x and weights together).

Weight stages have a `w_ready` barrier (the producer's arrival) and a `w_empty` one (the consumer's); x stages
a `x_ready` one (the TMA's bytes). The producer fences its stores for the tensor cores (the async proxy) before
it arrives, as the writing threads must; on sm_90 that fence waits for the producer's loads in flight, so each
of its steps still waits for one memory latency. From about 128 x rows a step's wgmma outlasts that, and there
the kernel beats `int4_wgmma`; at 64 rows the tuner keeps `int4_wgmma` on the Llama shapes (RESULTS.md).
The product is transposed, out.T = W @ x.T, and the epilogue is `int4_mma`'s. Program (pid, pid_k) owns
BLOCK_N weight rows, BLOCK_M x rows and the pid_k-th of SPLIT_K slices of K; a program takes most of an SM's
shared memory. Gluon does not run under TRITON_INTERPRET: tests/test_int4_wgmma.py compiles it for sm_90 on
any machine.
"""
from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .int4_mma import (dequantized_pair, halves, operand_layouts, step_range, store_transposed, weight_loads,
                       word_offsets)
from .pdl import release_dependents, wait_for_inputs
from .tiling import Tiling, launch

BLOCK_K = 128  # inputs a weight stage (x's stages hold half)
SHARED_BYTES = 200 * 1024  # the stages' share of an SM's 227 KB
PRODUCER_REGISTERS = {4: 152, 8: 96}  # a producer thread's registers, by the producer's warps


@gluon.jit
def in_order(low, high):
    """int32 pairs of 16-bit values: (low halves of low and high), (high halves of low and high)."""
    lows = gl.inline_asm_elementwise("prmt.b32 $0, $1, $2, 0x5410;", "=r,r,r", [low, high], dtype=gl.int32,
                                     is_pure=True, pack=1)
    highs = gl.inline_asm_elementwise("prmt.b32 $0, $1, $2, 0x7632;", "=r,r,r", [low, high], dtype=gl.int32,
                                      is_pure=True, pack=1)
    return lows, highs


@gluon.jit
def dequantize_in_order(words, s2, m2, dtype: gl.constexpr):
    """The weight block (BLOCK_N, BLOCK_K) in `dtype` from its words (BLOCK_N, groups, words of a group), with a
    word's 8 weights in 4 registers in input order: `dequantized_pair` gives nibbles (r, r + 4), two byte
    permutes a pair of those give (r, r + 1), so a thread's 8 consecutive inputs store as 16 bytes."""
    s3 = gl.expand_dims(s2, 2)
    m3 = gl.expand_dims(m2, 2)
    w01, w45 = in_order(dequantized_pair(words, s3, m3, 0, dtype), dequantized_pair(words, s3, m3, 1, dtype))
    w23, w67 = in_order(dequantized_pair(words, s3, m3, 2, dtype), dequantized_pair(words, s3, m3, 3, dtype))
    pairs = gl.join(gl.join(w01, w45), gl.join(w23, w67))  # join appends the last dim: pairs in input order
    low, high = halves(pairs, dtype)
    return gl.reshape(gl.join(low, high), [words.shape[0], 8 * words.shape[1] * words.shape[2]])


@gluon.jit
def ask_x(x_desc, xs, x_ready, half, wanted, halves, pid_m, first, BLOCK_M: gl.constexpr,
          X_STAGES: gl.constexpr):
    """Asks the TMA engine for x's (BLOCK_M, 64) block `half` of the slice into its stage, if wanted and in the
    slice."""
    stage = half % X_STAGES
    live = wanted & (half < halves)
    mbarrier.expect(x_ready.index(stage), x_desc.block_type.nbytes, pred=live)
    tma.async_copy_global_to_shared(x_desc, [pid_m * BLOCK_M, first * 128 + half * 64], x_ready.index(stage),
                                    xs.index(stage), pred=live)


@gluon.jit
def multiply(x_desc, ws, xs, w_ready, w_empty, x_ready, first, end, pid_m, BLOCK_N: gl.constexpr,
             BLOCK_M: gl.constexpr, STAGES: gl.constexpr, X_STAGES: gl.constexpr, MMA: gl.constexpr):
    """The consumer: acc (BLOCK_N, BLOCK_M) over the slice's steps, one wgmma of 64 inputs in flight; it asks
    for x itself, X_STAGES halves ahead, as each wgmma retires."""
    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
    halves = 2 * (end - first)
    for early in gl.static_range(X_STAGES):
        ask_x(x_desc, xs, x_ready, early, True, halves, pid_m, first, BLOCK_M, X_STAGES)
    for step in range(first, end):
        i = step - first
        stage = i % STAGES
        mbarrier.wait(w_ready.index(stage), (i // STAGES) & 1)
        for h in gl.static_range(2):
            half = 2 * i + h
            mbarrier.wait(x_ready.index(half % X_STAGES), (half // X_STAGES) & 1)
            acc = hopper.warpgroup_mma(ws.index(stage).slice(64 * h, 64, dim=1),
                                       xs.index(half % X_STAGES).permute((1, 0)), acc, is_async=True)
            acc = hopper.warpgroup_mma_wait(1, deps=[acc])
            # the wgmma of half - 1 retired: its x stage takes half - 1 + X_STAGES
            ask_x(x_desc, xs, x_ready, half - 1 + X_STAGES, half > 0, halves, pid_m, first, BLOCK_M, X_STAGES)
            if h == 0:  # and with it the last of step i - 1's weights
                mbarrier.arrive(w_empty.index((i + STAGES - 1) % STAGES), count=1, pred=i > 0)
    return (hopper.warpgroup_mma_wait(0, deps=[acc]),)  # a tuple: triton 3.6 flattens the partition's results


@gluon.jit
def produce(q_ptr, scales_ptr, mins_ptr, ws, w_ready, w_empty, first, end, pid_n, N, K, BLOCK_N: gl.constexpr,
            BLOCK_K: gl.constexpr, GROUP: gl.constexpr, STAGES: gl.constexpr, LW: gl.constexpr):
    """The producer: each step's dequantized weight block into its stage."""
    G: gl.constexpr = BLOCK_K // GROUP
    W: gl.constexpr = GROUP // 8
    dtype: gl.constexpr = ws.dtype
    groups, sm_at, word_at, row_ok, row_groups = word_offsets(pid_n, first, N, K, BLOCK_N, G, GROUP, LW)
    s2, m2, words = weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at, word_at,
                                 row_ok & gl.expand_dims(groups < row_groups, 0))
    for step in range(first, end):
        i = step - first
        stage = i % STAGES
        ahead = i + 1
        s2_n, m2_n, words_n = weight_loads(q_ptr, scales_ptr, mins_ptr, sm_at + ahead * G, word_at + ahead * (G * W),
                                           row_ok & gl.expand_dims((groups + ahead * G < row_groups)
                                                                   & (step + 1 < end), 0))
        w = dequantize_in_order(words, s2, m2, dtype)
        mbarrier.wait(w_empty.index(stage), ((i // STAGES) & 1) ^ 1)
        ws.index(stage).store(w)
        hopper.fence_async_shared()  # waits for the next step's words too (module docstring)
        mbarrier.arrive(w_ready.index(stage), count=1)
        s2, m2, words = s2_n, m2_n, words_n


@gluon.jit
def int4_wgmma_ws_kernel(x_desc, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk,
                         HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                         BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr,
                         DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr,
                         GROUP: gl.constexpr, STAGES: gl.constexpr, X_STAGES: gl.constexpr, PRODUCERS: gl.constexpr,
                         PRODUCER_REGISTERS: gl.constexpr, LW: gl.constexpr, MMA: gl.constexpr, WS: gl.constexpr,
                         PDL: gl.constexpr):
    """x_desc: a TMA descriptor of x (M, K) in (BLOCK_M, 64) blocks; q_ptr: int32 words (N, Kp / 8); scales and
    mins (N, Kp / GROUP) as int16. `tiling.launch`'s arguments (x's strides unused) plus the stages and the
    layouts of `layouts`."""
    wait_for_inputs(PDL)
    grid_m = gl.cdiv(M, BLOCK_M)
    pid_m, pid_n = gl.program_id(0) % grid_m, gl.program_id(0) // grid_m
    first, end = step_range(K, BLOCK_K, SPLIT_K)
    ws = gl.allocate_shared_memory(x_desc.dtype, [STAGES, BLOCK_N, BLOCK_K], WS)
    xs = gl.allocate_shared_memory(x_desc.dtype, [X_STAGES, BLOCK_M, BLOCK_K // 2], x_desc.layout)
    w_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    w_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    x_ready = gl.allocate_shared_memory(gl.int64, [X_STAGES, 1], mbarrier.MBarrierLayout())
    for stage in gl.static_range(STAGES):
        mbarrier.init(w_ready.index(stage), count=1)
        mbarrier.init(w_empty.index(stage), count=1)
    for stage in gl.static_range(X_STAGES):
        mbarrier.init(x_ready.index(stage), count=1)
    acc, = gl.warp_specialize([
        (multiply, (x_desc, ws, xs, w_ready, w_empty, x_ready, first, end, pid_m, BLOCK_N, BLOCK_M, STAGES,
                    X_STAGES, MMA)),
        (produce, (q_ptr, scales_ptr, mins_ptr, ws, w_ready, w_empty, first, end, pid_n, N, K, BLOCK_N, BLOCK_K,
                   GROUP, STAGES, LW)),
    ], [PRODUCERS], [PRODUCER_REGISTERS])
    release_dependents(PDL)
    store_transposed(acc, out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M, BLOCK_N, SPLIT_K, MMA)


def layouts(block_m: int, block_n: int, group: int, num_warps: int, producers: int):
    """(LW over the producer's words as in `int4_mma`, the consumer's wgmma accumulator (BLOCK_N, BLOCK_M), the
    shared layout of both operands' stages)."""
    lw, _, _ = operand_layouts(block_n, BLOCK_K, 16, group, producers)
    mma = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, block_m, 16])
    shared = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    return lw, mma, shared


def x_stages(block_m: int, block_n: int, stages: int) -> int:
    """x's stages of 64 inputs: as many as SHARED_BYTES holds next to the weights' stages, at most 8."""
    return min(8, (SHARED_BYTES - stages * block_n * 2 * BLOCK_K) // (block_m * BLOCK_K))


def registers_at_launch(warps: int) -> int:
    """The registers a thread may hold at launch so that `warps` warps fit the register file (65536), before
    the producer gives some to the consumer."""
    return min(256, 65536 // (32 * warps) // 8 * 8)


def x_descriptor(x2d: torch.Tensor, block_m: int, shared) -> TensorDescriptor:
    """x's TMA descriptor: 16-byte aligned base and row stride (a fresh contiguous copy otherwise)."""
    if x2d.stride(1) != 1 or x2d.data_ptr() % 16 or (x2d.stride(0) * x2d.element_size()) % 16:
        x2d = x2d.clone(memory_format=torch.contiguous_format)
    return TensorDescriptor.from_tensor(x2d, [block_m, BLOCK_K // 2], shared)


def matmul(x2d: torch.Tensor, tensors, dims, bias, block_m: int, config, split_k: int, out=None, partials=None):
    """x2d (M, K) @ W.T + bias for an INT4 weight, with `int4_wgmma.Config` `config` (stages > 0)."""
    n, k, group = dims[0], dims[1], dims[2]
    qweight, scales, mins = tensors
    lw, mma, shared = layouts(block_m, config.block_n, group, config.num_warps, config.producers)
    tiling = Tiling(block_m, config.block_n, BLOCK_K, split_k)
    pointers = [qweight.view(torch.int32), scales.view(torch.int16), mins.view(torch.int16)]
    constexprs = dict(GROUP=group, STAGES=config.stages, X_STAGES=x_stages(block_m, config.block_n, config.stages),
                      PRODUCERS=config.producers,
                      PRODUCER_REGISTERS=PRODUCER_REGISTERS[config.producers], LW=lw, MMA=mma, WS=shared,
                      num_warps=config.num_warps, maxnreg=registers_at_launch(config.num_warps + config.producers))
    return launch(int4_wgmma_ws_kernel, x2d, n, k, bias, tiling, pointers, (), constexprs, out, partials,
                  dependent=True, x_arg=x_descriptor(x2d, block_m, shared))
