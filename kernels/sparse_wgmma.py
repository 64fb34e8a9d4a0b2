"""NV24 and NV24_INT4 weights, and HYBRID grids with NV24 tiles, on Hopper's sparse warpgroup mma
(wgmma.mma_async.sp, inline PTX: Gluon has no sparse wgmma): the kept 2:4 values are the compressed A operand,
read by the tensor cores from shared memory, and the stored metadata their sparsity metadata. Nothing is
expanded, and each instruction does the work of a dense one twice its K.

Warp-specialized. One producer warp asks the TMA engine, per 128-input column of the program's slice, for x's
(BLOCK_M, 128) block (two (BLOCK_M, 64) boxes) and, for an NV24 tile or weight, the program's BLOCK_N rows of
kept values (a (BLOCK_N, 64) box) and their metadata ((BLOCK_N, 16) bytes); for a grid's DENSE tile, its two
(BLOCK_N, 64) halves; for a ZERO tile, nothing. An NV24_INT4 weight has DEQUANTIZERS producer warps instead:
they ask for x and the metadata the same way, and for the int4 pairs DEPTH columns ahead into a staging ring,
from which they dequantize the kept values (one 16-bit-pair fused multiply-add a pair, `DEQUANTIZE`) and store
them into the stage. The consumer warpgroups (64 weight rows each) wait for each stage, read their rows'
metadata words, wait for the column before to retire (its wgmma.sp may still read their metadata registers,
which the next column's reuse), free its stage and issue 4 wgmma.sp of K = 32 in one inline-asm block (a DENSE
tile: two dense wgmma, one column kept in flight).

The asm builds the shared-memory descriptors itself: the values' and x's boxes are rows of 128 bytes (128-byte
swizzle, 8-row groups 1024 bytes apart) in two rings that lead the kernel's shared buffers, so that Triton's
allocator places them first, the larger at the base of shared memory (`global_smem`), the other right after it
(`ring_offsets`; tests/test_sparse_wgmma.py checks the compiled kernel). Step j of a column reads the values at
byte 32 j of each row and x's half j // 2 at byte 64 (j % 2). Its metadata is word j of the row's 4 words in
the column (groups 8 j .. 8 j + 7, a nibble each): with sparsity selector 0, lanes 4 g and 4 g + 1 of a warp
give rows g and g + 8 of the warp's 16 rows, groups 0-3 (lane 4 g) or 4-7 (lane 4 g + 1), row g in bits 0-15
and row g + 8 in bits 16-31, one `prmt` of the two rows' words. In the accumulator's layout a thread holds
rows g (its elements 0 and 1 of every 4) and g + 8 (2 and 3), so each operand is an accumulator-shaped tensor
and the asm reads elements 0 and 2.

K a multiple of 128, 8 to 256 x rows (`supports`); `nv24_mma` and `hybrid_mma` take its configs as tuner
candidates. The product is transposed, out.T = W @ x.T; the epilogue is `int4_mma`'s. Program (pid, pid_k) owns
BLOCK_N weight rows, BLOCK_M x rows and the pid_k-th of SPLIT_K slices of the columns. Gluon does not run under
TRITON_INTERPRET: tests/test_sparse_wgmma.py compiles it for sm_90 on any machine.
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

from . import hybrid_wgmma
from .hybrid_wgmma_ws import DEQUANTIZE_PAIR, in_dtype, quantization
from .int4_mma import store_transposed
from .int4_wgmma import split_for
from .int4_wgmma_ws import registers_at_launch, x_descriptor
from .pdl import release_dependents, wait_for_inputs
from .tiling import Tiling, launch
from .wgmma_stage import program_tiles

COLUMN = 128  # inputs a stage holds
LAYOUTS = ("nv24", "nv24_int4", "hybrid")
ROW_BYTES = gl.constexpr(128)  # a box row: 64 kept values, or 64 inputs of x
MAX_M = 256  # wgmma's widest N
DTYPES = (torch.bfloat16, torch.float16)
SHARED_BYTES = 220 * 1024
PRODUCER_REGISTERS = gl.constexpr(40)
DEQUANTIZERS = gl.constexpr(4)  # NV24_INT4's producer warps
DEQUANTIZER_REGISTERS = gl.constexpr(152)
DEPTH = gl.constexpr(2)  # columns of NV24_INT4 pairs staged ahead
# the descriptors' high word: 8-row groups 1024 bytes apart, 128-byte swizzle
DESCRIPTOR_HIGH = (1024 >> 4) | (1 << 30)
CODE_DENSE = gl.constexpr(int(TileFormat.DENSE))
CODE_NV24 = gl.constexpr(int(TileFormat.NV24))
CODE_ZERO = gl.constexpr(int(TileFormat.ZERO))
NO_INPUTS = gl.constexpr(0x4444444444444444)  # two metadata words whose groups keep inputs 0 and 1


@dataclasses.dataclass(frozen=True)
class Config:
    """x rows a program (wgmma's N; fewer where M needs fewer), weight rows a program (64 a consumer warpgroup),
    ring stages, split-K slices over the columns (0: as many as give every SM a program)."""
    block_m: int
    block_n: int
    stages: int
    split_k: int = 0


def supports(layout: str, x2d: torch.Tensor, tensors=None) -> bool:
    """NV24 and NV24_INT4 weights, and HYBRID grids with NV24 tiles, that `hybrid_wgmma` takes (K a multiple of
    128, buffers in x's dtype at 16-byte boundaries, NV24_INT4 groups of 32, 64 or 128 kept values, bf16 or fp16 x
    on a Hopper GPU), 8 to MAX_M rows."""
    if layout not in LAYOUTS or not 8 <= x2d.shape[0] <= MAX_M:
        return False
    return hybrid_wgmma.supports(layout, x2d, tensors) and (layout != "hybrid" or tensors[3].numel() > 0)


def candidates_for(layout: str, x2d: torch.Tensor, tensors) -> list[Config]:
    """This kernel's candidates for the product, none if it does not take it."""
    return candidates(x2d.shape[0], layout) if supports(layout, x2d, tensors) else []


def x_boxes(block_m: int, block_n: int, stages: int, layout: str) -> int:
    """x's ring: two boxes a stage, and as many more (never read) as make it larger than the metadata's ring and
    NV24_INT4's staging and other than the weights' ring (whose size leads those), so that where the allocator
    places the two rings does not hang on a tie (`ring_offsets`)."""
    weights, _, *others = buffer_bytes(block_m, block_n, stages, layout, boxes=0)
    box, boxes = block_m * ROW_BYTES.value, 2 * stages
    while boxes * box == weights or boxes * box <= max(others):
        boxes += 1
    return boxes


def buffer_bytes(block_m: int, block_n: int, stages: int, layout: str, boxes: int | None = None) -> list[int]:
    """The kernel's shared buffers in the order it allocates them: the weights' ring (an NV24 tile's values box
    a stage, or a DENSE tile's two halves in grids), x's (`x_boxes`), the metadata's, and NV24_INT4's staging of
    int4 pairs."""
    if boxes is None:
        boxes = x_boxes(block_m, block_n, stages, layout)
    sizes = [(2 if layout == "hybrid" else 1) * stages * block_n * ROW_BYTES.value,
             boxes * block_m * ROW_BYTES.value, stages * block_n * 16]
    return sizes + ([DEPTH.value * block_n * 32] if layout == "nv24_int4" else [])


def fits(block_m: int, block_n: int, stages: int, layout: str) -> bool:
    return sum(buffer_bytes(block_m, block_n, stages, layout)) <= SHARED_BYTES


def most_stages(block_m: int, block_n: int, layout: str) -> int:
    return max([0] + [s for s in range(2, 9) if fits(block_m, block_n, s, layout)])


def block_m_for(m: int, most: int) -> int:
    return min(most, max(8, 1 << (m - 1).bit_length()))


def candidates(m: int, layout: str) -> list[Config]:
    """The configs SPARC_AUTOTUNE=1 times: the x rows M needs or half as many, 64 or 128 weight rows, as many
    stages as fit or 3, split by SM fill or not."""
    most = block_m_for(m, MAX_M)
    configs = []
    for bm, bn, split in itertools.product(sorted({max(8, most // 2), most}), (64, 128), (0, 1)):
        stages = [s for s in sorted({3, most_stages(bm, bn, layout)}) if fits(bm, bn, s, layout)]
        configs += [Config(bm, bn, s, split) for s in stages]
    return configs


def sparse_wgmma_asm(block_m: int, dtype: str) -> tuple[str, str]:
    """(asm, constraints) of one column's 4 wgmma.sp on the accumulator: operands per element (block_m / 2 of a
    thread) acc, A's and x's byte offsets in shared memory, the row's metadata words 0-1 and 2-3 (int64)."""
    p = block_m // 2
    acc = "{" + ", ".join(f"${i}" for i in range(p)) + "}"
    a, b, m01, m23 = 2 * p, 3 * p, 4 * p, 5 * p  # operand numbers of each input's first element
    lines = [
        "{ .reg .b32 base, a, b, sel, lane, w0, w1, w2, w3, v0, v1, v2, v3, e0, e1, e2, e3, da, db;",
        ".reg .b64 desc_a, desc_b; .reg .pred p;",
        "setp.ne.b32 p, 1, 0;",
        "mov.u32 base, global_smem;",
        # 14 bits of address (bits 4-17; those of the cluster's CTA rank dropped), leading offset 1 (unused)
        f"add.u32 a, base, ${a}; bfe.u32 a, a, 4, 14; or.b32 a, a, 0x10000;",
        f"add.u32 b, base, ${b}; bfe.u32 b, b, 4, 14; or.b32 b, b, 0x10000;",
        "mov.u32 lane, %laneid; and.b32 lane, lane, 1; mad.lo.u32 sel, lane, 0x2222, 0x5410;",
        f"mov.b64 {{w0, w1}}, ${m01}; mov.b64 {{w2, w3}}, ${m23};",  # row g
        f"mov.b64 {{v0, v1}}, ${m01 + 2}; mov.b64 {{v2, v3}}, ${m23 + 2};",  # row g + 8
        "prmt.b32 e0, w0, v0, sel; prmt.b32 e1, w1, v1, sel; prmt.b32 e2, w2, v2, sel; prmt.b32 e3, w3, v3, sel;",
        "wgmma.fence.sync.aligned;",
    ]
    for j in range(4):
        lines += [f"add.u32 da, a, {2 * j}; add.u32 db, b, {(j // 2) * block_m * 8 + (j % 2) * 4};",
                  f"mov.b64 desc_a, {{da, {DESCRIPTOR_HIGH}}}; mov.b64 desc_b, {{db, {DESCRIPTOR_HIGH}}};",
                  f"wgmma.mma_async.sp.sync.aligned.m64n{block_m}k32.f32.{dtype}.{dtype} {acc}, desc_a, desc_b, "
                  f"e{j}, 0, p, 1, 1, 0, 0;"]
    lines.append("wgmma.commit_group.sync.aligned; }")
    constraints = ",".join(["=f"] * p + [str(i) for i in range(p)] + ["r"] * (2 * p) + ["l"] * (2 * p))
    return "\n".join(lines), constraints


@gluon.jit
def tile_code(formats_ptr, at, PLAIN: gl.constexpr):
    """The format code of the grid's tile at `at`; an NV24 weight's (PLAIN): NV24's."""
    if PLAIN:
        return CODE_NV24
    return gl.load(formats_ptr + at).to(gl.int32)


@gluon.jit
def produce(x_desc, w_desc, v_desc, m_desc, ws, xs, metas, ready, empty, formats_ptr, offsets_ptr, entries, first,
            end, pid_m, first_row, row0, BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
            PLAIN: gl.constexpr):
    """The producer: each column's operands into its stage: x's block and an NV24 tile's values and metadata or
    a DENSE tile's two halves; a ZERO tile's stage gets a plain arrival."""
    x_bytes: gl.constexpr = 2 * x_desc.block_type.nbytes
    SLOTS: gl.constexpr = 1 if PLAIN else 2  # weight boxes a stage
    for col in range(first, end):
        i = col - first
        stage = i % STAGES
        code = tile_code(formats_ptr, entries + col, PLAIN)
        nv24, dense = code == CODE_NV24, code == CODE_DENSE
        mbarrier.wait(empty.index(stage), ((i // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(stage), x_bytes + v_desc.block_type.nbytes + m_desc.block_type.nbytes, pred=nv24)
        mbarrier.expect(ready.index(stage), x_bytes + 2 * w_desc.block_type.nbytes, pred=dense)
        mbarrier.arrive(ready.index(stage), count=1, pred=code == CODE_ZERO)
        for h in gl.static_range(2):
            tma.async_copy_global_to_shared(x_desc, [pid_m * BLOCK_M, col * BLOCK_K + h * (BLOCK_K // 2)],
                                            ready.index(stage), xs.index(2 * stage + h), pred=nv24 | dense)
        if PLAIN:  # values (N, K / 2), metadata (N, K / 8)
            v_at, m_at = [row0, col * (BLOCK_K // 2)], [row0, col * (BLOCK_K // 8)]
        else:  # a tile row: 64 values, 16 metadata bytes, or 128 weights
            row = (gl.load(offsets_ptr + entries + col) // BLOCK_K + first_row).to(gl.int32)
            v_at, m_at = [row, 0], [row, 0]
            for h in gl.static_range(2):
                tma.async_copy_global_to_shared(w_desc, [row, h * (BLOCK_K // 2)], ready.index(stage),
                                                ws.index(2 * stage + h), pred=dense)
        tma.async_copy_global_to_shared(v_desc, v_at, ready.index(stage), ws.index(SLOTS * stage), pred=nv24)
        tma.async_copy_global_to_shared(m_desc, m_at, ready.index(stage), metas.index(stage), pred=nv24)


# Per group of 4: $1 holds the byte of its two int4 values, $3 / $5 its half's scale / minimum twice; $0 gets
# both kept values, in input order.
DEQUANTIZE = ("{ .reg .b32 pair, low, c;\n"
              + DEQUANTIZE_PAIR.replace("BYTE", "$1").replace("SCALE", "$3").replace("MINIMUM", "$5")
              + "mov.b32 $0, pair; }")
DEQUANTIZE_BF16 = in_dtype(DEQUANTIZE, bf16=True)
DEQUANTIZE_FP16 = in_dtype(DEQUANTIZE, bf16=False)


@gluon.jit
def stage_pairs(q_desc, qs, staged, col, at, live, row0, BLOCK_K: gl.constexpr):
    """Asks the TMA engine for column `col`'s int4 pairs of the program's rows into staging slot at % DEPTH, if
    `live`."""
    slot = at % DEPTH
    mbarrier.expect(staged.index(slot), q_desc.block_type.nbytes, pred=live)
    tma.async_copy_global_to_shared(q_desc, [row0, col * (BLOCK_K // 4)], staged.index(slot), qs.index(slot),
                                    pred=live)


@gluon.jit
def dequantized(q, scales, mins, dtype: gl.constexpr):
    """The kept values (BLOCK_N, 64) of a column from its int4 pairs (BLOCK_N, 32) int32, a group's byte each,
    and its halves' scales and minimums ((BLOCK_N, 1) each, twice in an int32)."""
    first_half = gl.expand_dims(gl.arange(0, q.shape[1], layout=gl.SliceLayout(0, q.type.layout)), 0) < 16
    s2 = gl.where(first_half, scales[0], scales[1])
    m2 = gl.where(first_half, mins[0], mins[1])
    asm: gl.constexpr = DEQUANTIZE_BF16 if dtype == gl.bfloat16 else DEQUANTIZE_FP16
    pairs = gl.inline_asm_elementwise(asm, "=r,r,r,r,r,r,r", [gl.join(q, q), gl.join(s2, s2), gl.join(m2, m2)],
                                      dtype=dtype.value, is_pure=True, pack=2)
    return gl.reshape(pairs, [q.shape[0], 2 * q.shape[1]])


@gluon.jit
def produce_int4(x_desc, q_desc, m_desc, scales_ptr, mins_ptr, ws, xs, qs, metas, ready, empty, staged, first,
                 end, pid_m, row0, N, row_groups, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                 BLOCK_K: gl.constexpr, STAGES: gl.constexpr, LQ: gl.constexpr, GROUP: gl.constexpr):
    """The producer of an NV24_INT4 weight: each column's x block and metadata into its stage by TMA, and its
    kept values, dequantized from int4 pairs that the TMA engine staged DEPTH columns ahead."""
    for early in gl.static_range(DEPTH):
        stage_pairs(q_desc, qs, staged, first + early, early, first + early < end, row0, BLOCK_K)
    for col in range(first, end):
        i = col - first
        stage = i % STAGES
        scales, mins = quantization(scales_ptr, mins_ptr, row0, N, row_groups, col, BLOCK_N, BLOCK_K, LQ, GROUP)
        mbarrier.wait(empty.index(stage), ((i // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(stage), 2 * x_desc.block_type.nbytes + m_desc.block_type.nbytes)
        for h in gl.static_range(2):
            tma.async_copy_global_to_shared(x_desc, [pid_m * BLOCK_M, col * BLOCK_K + h * (BLOCK_K // 2)],
                                            ready.index(stage), xs.index(2 * stage + h))
        tma.async_copy_global_to_shared(m_desc, [row0, col * (BLOCK_K // 8)], ready.index(stage),
                                        metas.index(stage))
        mbarrier.wait(staged.index(i % DEPTH), (i // DEPTH) & 1)
        q = qs.index(i % DEPTH).load(LQ).to(gl.int32)
        ws.index(stage).store(dequantized(q, scales, mins, ws.dtype))
        hopper.fence_async_shared()
        mbarrier.arrive(ready.index(stage), count=1)
        stage_pairs(q_desc, qs, staged, col + DEPTH, i + DEPTH, col + DEPTH < end, row0, BLOCK_K)


@gluon.jit
def free_stage_before(empty, i, STAGES: gl.constexpr):
    """Frees the stage of the column before column i, whose wgmma retired."""
    mbarrier.arrive(empty.index((i + STAGES - 1) % STAGES), count=1, pred=i >= 1)


@gluon.jit
def consume(ws, xs, metas, ready, empty, formats_ptr, entries, first, end, row0, N, BLOCK_M: gl.constexpr,
            BLOCK_N: gl.constexpr, STAGES: gl.constexpr, W_AT: gl.constexpr, X_AT: gl.constexpr, MMA: gl.constexpr,
            ASM: gl.constexpr, CONSTRAINTS: gl.constexpr, PLAIN: gl.constexpr):
    """The consumer: acc (BLOCK_N, BLOCK_M) over the slice's columns, one column's wgmma in flight while it
    waits for the next stage and reads its metadata. Rows past N
    (zeros from the TMA engine, or the next tile's) take metadata words that keep inputs 0 and 1 of each group:
    a zero nibble is no valid metadata."""
    SLOTS: gl.constexpr = 1 if PLAIN else 2
    rows = gl.expand_dims(gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, MMA)), 1)
    real = row0 + rows < N
    zeros = gl.zeros([BLOCK_N, BLOCK_M], gl.int32, layout=MMA)
    a_at = zeros + (W_AT + (rows // 64) * (64 * ROW_BYTES))  # the warpgroup's rows
    b_at = zeros + X_AT
    words = metas._reinterpret(gl.int64, [STAGES, BLOCK_N, 2], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
    for col in range(first, end):
        i = col - first
        stage = i % STAGES
        code = tile_code(formats_ptr, entries + col, PLAIN)
        mbarrier.wait(ready.index(stage), (i // STAGES) & 1)
        if code == CODE_NV24:
            w01 = gl.where(real, words.index(stage).slice(0, 1, dim=1).load(MMA), NO_INPUTS)
            w23 = gl.where(real, words.index(stage).slice(1, 1, dim=1).load(MMA), NO_INPUTS)
            w01, _ = gl.broadcast(w01, acc)
            w23, _ = gl.broadcast(w23, acc)
            # the column before retires first: its wgmma may read their metadata registers, which these reuse
            acc = hopper.warpgroup_mma_wait(0, deps=[acc])
            acc = gl.inline_asm_elementwise(ASM, CONSTRAINTS, [acc, a_at + stage * (SLOTS * BLOCK_N * ROW_BYTES),
                                                               b_at + stage * (2 * BLOCK_M * ROW_BYTES), w01, w23],
                                            dtype=gl.float32, is_pure=False, pack=BLOCK_M // 2)
            free_stage_before(empty, i, STAGES)  # after the issue: the barrier it takes is off the mma's path
        elif code == CODE_DENSE:
            for h in gl.static_range(2):
                acc = hopper.warpgroup_mma(ws.index(2 * stage + h), xs.index(2 * stage + h).permute((1, 0)), acc,
                                           is_async=True)
            acc = hopper.warpgroup_mma_wait(2, deps=[acc])
            free_stage_before(empty, i, STAGES)
        else:
            acc = hopper.warpgroup_mma_wait(0, deps=[acc])
            free_stage_before(empty, i, STAGES)
    return (hopper.warpgroup_mma_wait(0, deps=[acc]),)  # a tuple: triton 3.6 flattens the partition's results


@gluon.jit
def sparse_wgmma_kernel(x_desc, out_ptr, bias_ptr, formats_ptr, offsets_ptr, w_desc, v_desc, m_desc, scales_ptr,
                        mins_ptr, M, N, K, stride_xm, stride_xk, grid_cols, row_groups, HAS_BIAS: gl.constexpr,
                        BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr,
                        USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr,
                        ROUND_BF16: gl.constexpr, STAGES: gl.constexpr, X_BOXES: gl.constexpr,
                        W_AT: gl.constexpr, X_AT: gl.constexpr,
                        MMA: gl.constexpr, ASM: gl.constexpr, CONSTRAINTS: gl.constexpr, PLAIN: gl.constexpr,
                        GROUP: gl.constexpr, LQ: gl.constexpr, PDL: gl.constexpr):
    """x_desc: x (M, K) in (BLOCK_M, 64) boxes; formats (TN, TK) uint8 and offsets (TN, TK) int64 of a HYBRID
    grid, w_desc its DENSE buffer as (rows, 128), v_desc its NV24 values as (rows, 64), m_desc their metadata as
    (rows, 16), in boxes of BLOCK_N rows and 64 inputs (16 bytes of metadata). PLAIN: an NV24 weight instead, no
    grid read, its values (N, K / 2) and metadata (N, K / 8) in the same boxes. `tiling.launch`'s arguments (x's
    strides unused). GROUP: an NV24_INT4 weight (PLAIN), v_desc over its int4 pairs (N, K / 4) in (BLOCK_N, 32)
    boxes, its scales and minimums (N, row_groups) as int16, of GROUP kept values each; LQ the producer's layout
    over a column's pairs. X_BOXES: x's ring (`x_boxes`); W_AT and X_AT: where the weights' and x's rings start in
    shared memory (`ring_offsets`)."""
    SLOTS: gl.constexpr = 1 if PLAIN else 2
    wait_for_inputs(PDL)
    pid_m, pid_n, first_row, entries, first, end = program_tiles(M, K, grid_cols, BLOCK_M, BLOCK_N, BLOCK_K,
                                                                 SPLIT_K)
    ws = gl.allocate_shared_memory(x_desc.dtype, [SLOTS * STAGES, BLOCK_N, BLOCK_K // 2], x_desc.layout)
    xs = gl.allocate_shared_memory(x_desc.dtype, [X_BOXES, BLOCK_M, BLOCK_K // 2], x_desc.layout)
    metas = gl.allocate_shared_memory(m_desc.dtype, [STAGES, BLOCK_N, BLOCK_K // 8], m_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=2 if GROUP else 1)
        mbarrier.init(empty.index(s), count=1)
    if GROUP:
        qs = gl.allocate_shared_memory(v_desc.dtype, [DEPTH, BLOCK_N, BLOCK_K // 4], v_desc.layout)
        staged = gl.allocate_shared_memory(gl.int64, [DEPTH, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(DEPTH):
            mbarrier.init(staged.index(s), count=1)
        acc, = gl.warp_specialize([
            (consume, (ws, xs, metas, ready, empty, formats_ptr, entries, first, end, pid_n * BLOCK_N, N, BLOCK_M,
                       BLOCK_N, STAGES, W_AT, X_AT, MMA, ASM, CONSTRAINTS, PLAIN)),
            (produce_int4, (x_desc, v_desc, m_desc, scales_ptr, mins_ptr, ws, xs, qs, metas, ready, empty, staged,
                            first, end, pid_m, pid_n * BLOCK_N, N, row_groups, BLOCK_M, BLOCK_N, BLOCK_K, STAGES, LQ,
                            GROUP)),
        ], [DEQUANTIZERS], [DEQUANTIZER_REGISTERS])
    else:
        acc, = gl.warp_specialize([
            (consume, (ws, xs, metas, ready, empty, formats_ptr, entries, first, end, pid_n * BLOCK_N, N, BLOCK_M,
                       BLOCK_N, STAGES, W_AT, X_AT, MMA, ASM, CONSTRAINTS, PLAIN)),
            (produce, (x_desc, w_desc, v_desc, m_desc, ws, xs, metas, ready, empty, formats_ptr, offsets_ptr,
                       entries, first, end, pid_m, first_row, pid_n * BLOCK_N, BLOCK_M, BLOCK_K, STAGES, PLAIN)),
        ], [1], [PRODUCER_REGISTERS])
    release_dependents(PDL)
    store_transposed(acc, out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M, BLOCK_N, SPLIT_K, MMA)


def ring_offsets(block_m: int, block_n: int, stages: int, layout: str) -> tuple[int, int]:
    """Where the weights' and x's rings start in shared memory: Triton's allocator places the kernel's buffers
    (all live throughout) largest first from offset 0; the rings' sizes are multiples of their 1024-byte
    alignment, they lead the others and differ (`x_boxes`)."""
    weights, x = buffer_bytes(block_m, block_n, stages, layout)[:2]
    return (0, weights) if weights > x else (x, 0)


def layouts(block_m: int, block_n: int):
    """(the accumulator's layout (BLOCK_N, BLOCK_M): a warpgroup a 64-row block, the 128-byte swizzled layout of
    the weights' and x's boxes, the unswizzled one of the metadata's and int4 pairs' boxes)."""
    mma = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[block_n // 16, 1], instr_shape=[16, block_m, 16])
    return (mma, gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2),
            gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2))


def pairs_layout():
    """The dequantizers' layout over a column's int4 pairs (BLOCK_N, 32 bytes): 4 bytes a thread, whose 8 kept
    values make one 16-byte store."""
    return gl.BlockedLayout([1, 4], [4, 8], [DEQUANTIZERS.value, 1], [1, 0])


def descriptors(layout: str, tensors, block_n: int, dtype: torch.dtype, shared, plain_bytes):
    """(grid formats, grid offsets, TMA descriptors of the DENSE buffer as (rows, 128), the NV24 values as (rows,
    64) and their metadata as (rows, 16) bytes, in boxes of block_n rows and 64 inputs (16 metadata bytes),
    scales, minimums); an NV24 weight's values (N, K / 2) and metadata (N, K / 8) in the same boxes, no grid (its
    buffers stand in, never read); an NV24_INT4 weight's int4 pairs (N, K / 4) in (block_n, 32) boxes, its
    scales and minimums as int16."""
    if layout == "hybrid":
        grid, offsets, dense, values, meta = tensors[:5]
        values, meta = values.view(-1, COLUMN // 2), meta.view(-1, COLUMN // 8)
    else:
        values, meta = tensors[0], tensors[-1]
        grid, offsets, dense = values, meta, values[:0]
    if not dense.numel():  # a box of the right shape, never read
        dense = torch.empty(block_n, COLUMN, dtype=dtype, device=values.device)
    if layout == "nv24_int4":
        scales, mins = (t.view(torch.int16) for t in tensors[1:3])
        v_desc = TensorDescriptor.from_tensor(values, [block_n, COLUMN // 4], plain_bytes)
    else:
        scales = mins = values  # never read
        v_desc = TensorDescriptor.from_tensor(values, [block_n, COLUMN // 2], shared)
    return [grid, offsets, hybrid_wgmma.w_descriptor(dense, block_n, shared), v_desc,
            TensorDescriptor.from_tensor(meta, [block_n, COLUMN // 8], plain_bytes), scales, mins]


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (M, K) @ W.T + bias for an NV24 or NV24_INT4 weight or a HYBRID grid that `supports` takes."""
    n, k = dims[0], dims[1]
    m = x2d.shape[0]
    block_m = block_m_for(m, config.block_m)
    if config.block_n not in (64, 128) or config.stages < 2 or not fits(block_m, config.block_n, config.stages,
                                                                         layout):  # fewer x rows fit as well
        raise SparcError(f"sparse_wgmma config {config}: 64 or 128 weight rows and 2 to "
                         f"{most_stages(block_m, config.block_n, layout)} stages; take one of "
                         "sparse_wgmma.candidates(m, layout)")
    if split_k is None:
        split_k = split_for(config, -(-m // block_m) * -(-n // config.block_n), k // COLUMN, x2d.device)
    mma, shared, plain_bytes = layouts(block_m, config.block_n)
    num_warps = config.block_n // 16
    group = hybrid_wgmma.int4_group(k, tensors) if layout == "nv24_int4" else 0
    asm, constraints = sparse_wgmma_asm(block_m, "bf16" if x2d.dtype == torch.bfloat16 else "f16")
    w_at, x_at = ring_offsets(block_m, config.block_n, config.stages, layout)
    constexprs = dict(STAGES=config.stages, X_BOXES=x_boxes(block_m, config.block_n, config.stages, layout),
                      W_AT=w_at, X_AT=x_at, MMA=mma, ASM=asm, CONSTRAINTS=constraints,
                      PLAIN=layout != "hybrid", GROUP=group, LQ=pairs_layout(), num_warps=num_warps,
                      maxnreg=registers_at_launch(num_warps + 4))  # kernels launch whole warpgroups
    return launch(sparse_wgmma_kernel, x2d, n, k, bias, Tiling(block_m, config.block_n, COLUMN, split_k),
                  descriptors(layout, tensors, config.block_n, x2d.dtype, shared, plain_bytes),
                  (k // COLUMN, tensors[1].shape[1] if group else 0), constexprs, out, partials, dependent=True,
                  x_arg=x_descriptor(x2d, block_m, shared))
