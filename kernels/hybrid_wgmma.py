"""HYBRID grids of 128 x 128 tiles on Hopper: both operands of the warpgroup mma (wgmma, Gluon)
come straight from global memory into shared memory through the TMA engine, a ring of STAGES tile columns ahead.

A DENSE tile is stored whole, as a (rows x 128) matrix in x's dtype (`hybrid`): viewed as one (rows, 128)
matrix, the DENSE buffer hands the TMA engine a program's BLOCK_N rows of a tile as a plain 2-D block at row
offset / 128 + the program's first row. So nothing passes through registers: per tile column, one thread asks
for the program's rows of the tile and x's (BLOCK_M, 128) block, each as two (rows, 64) halves (a 128-byte
swizzled box), into the stage's buffers and its mbarrier, then the warpgroups run two asynchronous wgmma on it,
keep one column's in flight and reuse the stage of the column before for the column STAGES - 1 ahead. ZERO
tiles move no bytes: the stage's barrier gets a plain arrival and no wgmma runs. Rows past N (the last tile
row may be shorter) read the next tile's or no bytes; their outputs are never stored. Grids with NV24 tiles
run `hybrid_wgmma_ws`, whose producer warps expand those tiles into the stages.

`hybrid_mma` runs every grid up to 128 x rows on mma.sync with its operands through registers. For grids
with K a multiple of 128 this kernel is a tuner candidate beside it, from 2 to 256 x rows (`Config`); so for
NV24 weights beside `nv24_mma`. The product is transposed, out.T = W @ x.T, and the epilogue is `int4_mma`'s.
Program (pid, pid_k) owns BLOCK_N rows of one tile row, BLOCK_M x rows and the pid_k-th of SPLIT_K slices of the
tile columns. Gluon does not run under TRITON_INTERPRET: tests/test_hybrid_wgmma.py compiles it for sm_90 on any
machine.
"""
from __future__ import annotations

import dataclasses
import itertools

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from sparc.errors import SparcError
from sparc.ir import TileFormat

from . import hybrid_wgmma_ws
from .int4_mma import store_transposed
from .int4_wgmma import split_for
from .int4_wgmma_ws import registers_at_launch, x_descriptor
from .pdl import release_dependents, wait_for_inputs
from .wgmma_stage import program_tiles
from .tiling import Tiling, launch

TILE = 128
HALF = TILE // 2  # inputs of a TMA box: 128 bytes, the swizzle's width
DTYPES = (torch.bfloat16, torch.float16)
MAX_M = 256  # wgmma's widest N
LAYOUTS = ("hybrid", "nv24", "nv24_int4")
GROUPS = (32, 64, 128)  # NV24_INT4 groups (kept values) of whole halves of a tile column, or of two columns
SHARED_BYTES = 200 * 1024  # the stages' share of an SM's 227 KB
CODE_DENSE = gl.constexpr(int(TileFormat.DENSE))
CODE_ZERO = gl.constexpr(int(TileFormat.ZERO))


@dataclasses.dataclass(frozen=True)
class Config:
    """x rows a program (wgmma's N; fewer where M needs fewer), weight rows a program (64 a warpgroup, dividing
    128), split-K slices over the tile columns (0: as many as give every SM a program) and warps (4 or 8). The
    ring takes as many stages as SHARED_BYTES holds."""
    block_m: int
    block_n: int
    split_k: int = 0
    num_warps: int = 4


def supports(layout: str, x2d: torch.Tensor, tensors=None) -> bool:
    """HYBRID grids of DENSE, NV24 and ZERO tiles of 128 (not only ZERO ones), and NV24 weights, stored in x's
    dtype, and NV24_INT4 weights (scales in x's dtype, GROUPS), K a multiple of 128, 2 to MAX_M rows of bf16 or
    fp16 x on a Hopper GPU (from the buffers' sizes and dtypes: no data read). Grids with NV24 tiles and the
    NV24 and NV24_INT4 weights run `hybrid_wgmma_ws`."""
    if layout not in LAYOUTS or tensors is None or not (2 <= x2d.shape[0] <= MAX_M and x2d.is_cuda):
        return False
    k = x2d.shape[1]
    return (x2d.dtype in DTYPES and k % TILE == 0 and takes_buffers(layout, tensors, k, x2d.dtype)
            and torch.cuda.get_device_capability(x2d.device)[0] == 9)


def takes_buffers(layout: str, tensors, k: int, dtype: torch.dtype) -> bool:
    """NV24 values (N, K / 2) in `dtype`; or a grid of K / 128 tile columns, some DENSE or NV24 tile, none of
    another stored format, DENSE and NV24 buffers in `dtype`; every buffer at a 16-byte boundary."""
    if layout == "nv24":
        values, read = tensors[0], tensors
        fits = values.dtype == dtype and values.shape[1] == k // 2
    elif layout == "nv24_int4":
        pairs, scales, read = tensors[0], tensors[1], tensors
        fits = (pairs.shape[1] == k // 4 and scales.dtype == dtype and scales.shape[1] > 0
                and k % (2 * scales.shape[1]) == 0 and int4_group(k, tensors) in GROUPS)
    else:
        grid, dense, values, read = tensors[0], tensors[2], tensors[3], tensors[2:5]
        fits = (dense.dtype == dtype and values.dtype == dtype and grid.shape[1] == k // TILE
                and bool(dense.numel() or values.numel()) and not any(t.numel() for t in tensors[5:]))
    return fits and all(t.data_ptr() % 16 == 0 for t in read if t.numel())


def int4_group(k: int, tensors) -> int:
    """An NV24_INT4 weight's quantization group, in kept values, from its scales' row length."""
    return k // (2 * tensors[1].shape[1])


def block_m_for(m: int, most: int) -> int:
    return min(most, max(16, 1 << (m - 1).bit_length()))


def stages_for(block_m: int, block_n: int, nv24: bool = False) -> int:
    """The ring's stages: as many as SHARED_BYTES holds, at most 8 (a stage: BLOCK_N rows of a tile and BLOCK_M
    of x) or, `nv24` (`hybrid_wgmma_ws`), 16 of half a tile's inputs next to its staging ring of 16-bit values
    (the larger one)."""
    if nv24:
        return min(16, (SHARED_BYTES - hybrid_wgmma_ws.staging_bytes(block_n)) // (TILE * (block_m + block_n)))
    return min(8, SHARED_BYTES // (2 * TILE * (block_m + block_n)))


def candidates_for(layout: str, x2d: torch.Tensor, tensors) -> list[Config]:
    """This kernel's candidates for the product, none if it does not take it."""
    if not supports(layout, x2d, tensors):
        return []
    return candidates(x2d.shape[0], layout != "hybrid" or tensors[3].numel() > 0)


def candidates(m: int, nv24: bool = False) -> list[Config]:
    """The configs SPARC_AUTOTUNE=1 times: x rows up to those M needs, 64 or 128 weight rows on one or two
    warpgroups with at most 128 accumulator registers a thread and a ring of 2 stages or more (grids with NV24
    tiles, `nv24`: 3 stages of half a column), split by SM fill or not."""
    most = block_m_for(m, MAX_M)
    shapes = [(bm, bn, warps) for bm, (bn, warps) in itertools.product((16, 32, 64, 128, 256),
                                                                      [(64, 4), (128, 4), (128, 8)])
              if bm <= most and bm * bn <= 128 * 32 * warps and stages_for(bm, bn, nv24) >= (3 if nv24 else 2)]
    return [Config(bm, bn, split, warps) for (bm, bn, warps), split in itertools.product(shapes, (0, 1))]


@gluon.jit
def ask_column(x_desc, w_desc, xs, ws, ready, formats_ptr, offsets_ptr, entries, col, at, live, pid_m, first_row,
               BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr):
    """Asks the TMA engine for tile column `col` into stage at % STAGES (its two halves in buffers 2 stage and
    2 stage + 1): x's (BLOCK_M, 128) block and the program's rows of the tile if DENSE, a plain arrival if ZERO,
    nothing unless `live`."""
    stage = at % STAGES
    code = gl.load(formats_ptr + entries + col, mask=live, other=CODE_ZERO).to(gl.int32)
    row = gl.load(offsets_ptr + entries + col, mask=live, other=0) // BLOCK_K + first_row
    dense = live & (code == CODE_DENSE)
    mbarrier.expect(ready.index(stage), 2 * (x_desc.block_type.nbytes + w_desc.block_type.nbytes), pred=dense)
    mbarrier.arrive(ready.index(stage), count=1, pred=live & (code != CODE_DENSE))
    for h in gl.static_range(2):
        tma.async_copy_global_to_shared(x_desc, [pid_m * BLOCK_M, col * BLOCK_K + h * (BLOCK_K // 2)],
                                        ready.index(stage), xs.index(2 * stage + h), pred=dense)
        tma.async_copy_global_to_shared(w_desc, [row.to(gl.int32), h * (BLOCK_K // 2)], ready.index(stage),
                                        ws.index(2 * stage + h), pred=dense)


@gluon.jit
def hybrid_wgmma_kernel(x_desc, out_ptr, bias_ptr, formats_ptr, offsets_ptr, w_desc, M, N, K, stride_xm, stride_xk,
                        grid_cols, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                        BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr,
                        DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr,
                        HAS_ZERO: gl.constexpr, STAGES: gl.constexpr, MMA: gl.constexpr, PDL: gl.constexpr):
    """x_desc: a TMA descriptor of x (M, K) in (BLOCK_M, 64) blocks; w_desc one of the DENSE buffer as (rows,
    128) in (BLOCK_N, 64) blocks; formats (TN, TK) uint8 and offsets (TN, TK) int64 of the grid (`hybrid`).
    `tiling.launch`'s arguments (x's strides unused); HAS_ZERO: the grid holds ZERO tiles (else no branch)."""
    wait_for_inputs(PDL)
    pid_m, pid_n, first_row, entries, first, end = program_tiles(M, K, grid_cols, BLOCK_M, BLOCK_N, BLOCK_K,
                                                                 SPLIT_K)
    ws = gl.allocate_shared_memory(w_desc.dtype, [2 * STAGES, BLOCK_N, BLOCK_K // 2], w_desc.layout)
    xs = gl.allocate_shared_memory(x_desc.dtype, [2 * STAGES, BLOCK_M, BLOCK_K // 2], x_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
    for early in gl.static_range(STAGES - 1):
        ask_column(x_desc, w_desc, xs, ws, ready, formats_ptr, offsets_ptr, entries, first + early, early,
                   first + early < end, pid_m, first_row, BLOCK_M, BLOCK_K, STAGES)
    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
    for col in range(first, end):
        i = col - first
        stage = i % STAGES
        mbarrier.wait(ready.index(stage), (i // STAGES) & 1)
        if HAS_ZERO:
            code = gl.load(formats_ptr + entries + col).to(gl.int32)
            if code == CODE_DENSE:
                acc = multiply(acc, ws, xs, stage)
                acc = hopper.warpgroup_mma_wait(2, deps=[acc])
            else:
                acc = hopper.warpgroup_mma_wait(0, deps=[acc])
        else:
            acc = multiply(acc, ws, xs, stage)
            acc = hopper.warpgroup_mma_wait(2, deps=[acc])
        # the column before retired: its stage takes the column STAGES - 1 ahead
        ask_column(x_desc, w_desc, xs, ws, ready, formats_ptr, offsets_ptr, entries, col + STAGES - 1,
                   i + STAGES - 1, col + STAGES - 1 < end, pid_m, first_row, BLOCK_M, BLOCK_K, STAGES)
    acc = hopper.warpgroup_mma_wait(0, deps=[acc])
    release_dependents(PDL)
    store_transposed(acc, out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M, BLOCK_N, SPLIT_K, MMA)


@gluon.jit
def multiply(acc, ws, xs, stage):
    """acc + the stage's weight rows times its x block: two asynchronous wgmma of 64 inputs."""
    for h in gl.static_range(2):
        acc = hopper.warpgroup_mma(ws.index(2 * stage + h), xs.index(2 * stage + h).permute((1, 0)), acc,
                                   is_async=True)
    return acc


def layouts(block_m: int, num_warps: int):
    """(the wgmma accumulator's layout (BLOCK_N, BLOCK_M), the shared layout of both operands' boxes)."""
    mma = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, block_m, 16])
    return mma, gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)


def w_descriptor(dense: torch.Tensor, block_n: int, shared) -> TensorDescriptor:
    """The DENSE buffer as (rows, 128) in (BLOCK_N, 64) boxes."""
    return TensorDescriptor.from_tensor(dense.view(-1, TILE), [block_n, HALF], shared)


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (M, K) @ W.T + bias for a HYBRID or NV24 weight that `supports` takes."""
    n, k = dims[0], dims[1]
    m = x2d.shape[0]
    block_m = block_m_for(m, config.block_m)
    grid_cols = k // TILE
    if split_k is None:
        split_k = split_for(config, -(-m // block_m) * -(-n // config.block_n), grid_cols, x2d.device)
    mma, shared = layouts(block_m, config.num_warps)
    tiling = Tiling(block_m, config.block_n, TILE, split_k)
    x_desc = x_descriptor(x2d, block_m, shared)
    if layout != "hybrid" or tensors[3].numel():
        return run_nv24(x2d, x_desc, layout, tensors, dims, bias, config, block_m, tiling, mma, shared, out,
                        partials)
    grid, offsets, dense = tensors[:3]
    constexprs = dict(HAS_ZERO=dense.numel() != n * k, STAGES=stages_for(block_m, config.block_n),
                      MMA=mma, num_warps=config.num_warps)
    w_desc = w_descriptor(dense, config.block_n, shared)
    return launch(hybrid_wgmma_kernel, x2d, n, k, bias, tiling, [grid, offsets, w_desc], (grid_cols,), constexprs,
                  out, partials, dependent=True, x_arg=x_desc)


def run_nv24(x2d, x_desc, layout: str, tensors, dims, bias, config: Config, block_m: int, tiling: Tiling, mma,
             shared, out, partials):
    """`hybrid_wgmma_ws` for a grid with NV24 tiles or an NV24 or NV24_INT4 weight."""
    stages = stages_for(block_m, config.block_n, nv24=True)
    if stages < 3:
        raise SparcError(f"hybrid_wgmma config {config} leaves no room for 3 stages next to the NV24 staging; "
                         "take one of hybrid_wgmma.candidates(m, nv24=True)")
    plain, group = layout != "hybrid", int4_group(dims[1], tensors) if layout == "nv24_int4" else 0
    if plain:  # no grid to read: the weight's buffers stand in for it
        grid, offsets, dense, values, meta = tensors[0], tensors[-1], tensors[0][:0], tensors[0], tensors[-1]
    else:
        grid, offsets, dense, values, meta = tensors[:5]
        values, meta = values.view(-1, HALF), meta.view(-1, TILE // 8)
    scales, mins = (t.view(torch.int16) for t in tensors[1:3]) if group else (values, values)  # never read
    # a weight without DENSE tiles still passes a descriptor of the right box (never read)
    w = dense if dense.numel() else torch.empty(config.block_n, TILE, dtype=x2d.dtype, device=x2d.device)
    v_desc, m_desc = hybrid_wgmma_ws.staging_descriptors(values, meta, config.block_n)
    lv, lm = hybrid_wgmma_ws.producer_layouts(quantized=group > 0)
    constexprs = dict(STAGES=stages, PRODUCERS=hybrid_wgmma_ws.PRODUCERS,
                      PRODUCER_REGISTERS=hybrid_wgmma_ws.PRODUCER_REGISTERS, LV=lv, LM=lm, MMA=mma,
                      PLAIN=plain, GROUP=group, num_warps=config.num_warps,
                      maxnreg=registers_at_launch(config.num_warps + hybrid_wgmma_ws.PRODUCERS))
    return launch(hybrid_wgmma_ws.hybrid_wgmma_ws_kernel, x2d, dims[0], dims[1], bias, tiling,
                  [grid, offsets, w_descriptor(w, config.block_n, shared), v_desc, m_desc, scales, mins],
                  (dims[1] // TILE, scales.shape[1] if group else 0),
                  constexprs, out, partials, dependent=True, x_arg=x_desc)
