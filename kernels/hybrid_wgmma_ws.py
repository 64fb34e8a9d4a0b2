"""HYBRID grids that hold NV24 tiles (with DENSE and ZERO ones), and NV24 or NV24_INT4 weights (every tile NV24:
PLAIN; int4 values: GROUP), on Hopper's warpgroup mma, warp-specialized: warps that fill a ring of shared-memory
stages feed warps that multiply. NV24_INT4's int4 pairs are dequantized (two values a 16-bit-pair fused
multiply-add) as they are placed; the producer loads each column's scales and minimums from global memory first
thing in its step.

`hybrid_wgmma` brings DENSE tiles into shared memory by TMA alone. An NV24 tile has to be expanded first: the
wgmma reads both operands from shared memory in input order, and Gluon has no sparse wgmma. Here a producer
partition (PRODUCERS warps) walks the program's tile columns. A ring stage holds half a column (64 inputs), so
that 256 x rows and 128 weight rows still fit 3 stages. Per half column, once the consumer freed its stage:
- DENSE: it asks the TMA engine for the program's rows of the tile's half and x's block, as `hybrid_wgmma`;
- NV24: it asks for x's block, reads the rows' kept values and metadata from a staging ring that the TMA
  engine filled DEPTH columns ahead, places each value at its 2-bit position (`place`), stores the
  (BLOCK_N, 64) weight block into the stage and fences the stores for the tensor cores;
- ZERO: nothing.
Then it arrives on the stage's barrier, which completes once its two arrivals (the byte count's and the
producer's) and the TMA's bytes are in. Only the TMA engine reads global memory, so the fence waits for no
load in flight (the register loads of `int4_wgmma_ws` make each of its steps wait one memory latency there).
The consumer (the kernel's num_warps) waits for each stage, runs an asynchronous wgmma on it unless the tile
is ZERO, and frees a stage once its wgmma retired, keeping two stages' in flight where the ring has 4 or more.

K a multiple of 128, 2 to 256 x rows (`hybrid_wgmma.supports`); `hybrid_wgmma.matmul` runs it where the grid
holds NV24 tiles and for NV24 weights, whose values and metadata rows the TMA engine reads in place. The
product is transposed, out.T = W @ x.T; the epilogue is `int4_mma`'s. Program (pid, pid_k) owns BLOCK_N rows of
one tile row, BLOCK_M x rows and the pid_k-th of SPLIT_K slices of the tile columns. Gluon does not run under
TRITON_INTERPRET: tests/test_hybrid_wgmma.py compiles it for sm_90 on any machine.
"""
from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from sparc.ir import TileFormat

from .int4_mma import packed_twice, store_transposed
from .int4_wgmma_ws import registers_at_launch
from .pdl import release_dependents, wait_for_inputs
from .wgmma_stage import program_tiles

PRODUCERS = 4  # warps that fill the stages
PRODUCER_REGISTERS = 152
DEPTH = gl.constexpr(2)  # NV24 tiles staged ahead
CODE_DENSE = gl.constexpr(int(TileFormat.DENSE))
CODE_NV24 = gl.constexpr(int(TileFormat.NV24))
CODE_ZERO = gl.constexpr(int(TileFormat.ZERO))


def staging_bytes(block_n: int) -> int:
    """Shared bytes of the NV24 staging ring: a tile row's 64 kept values and 16 metadata bytes a row (16-bit
    values; int4 ones take less)."""
    return DEPTH.value * block_n * (2 * 64 + 16)


@gluon.jit
def tile_entry(formats_ptr, offsets_ptr, at, live, PLAIN: gl.constexpr):
    """(format code, offset in weights) of the tile at `at`; ZERO's code unless `live`. PLAIN: NV24's."""
    if PLAIN:
        code, offset = gl.where(live, CODE_NV24, CODE_ZERO), 0
    else:
        code = gl.load(formats_ptr + at, mask=live, other=CODE_ZERO).to(gl.int32)
        offset = gl.load(offsets_ptr + at, mask=live, other=0)
    return code, offset


@gluon.jit
def stage_nv24(v_desc, m_desc, vs, ms, staged, formats_ptr, offsets_ptr, entries, col, at, live, first_row,
               row0, BLOCK_K: gl.constexpr, PLAIN: gl.constexpr):
    """Asks the TMA engine for the program's rows of tile column `col`'s kept values and metadata into staging
    slot at % DEPTH if `live` and the tile is NV24; else a plain arrival on the slot's barrier."""
    slot = at % DEPTH
    code, offset = tile_entry(formats_ptr, offsets_ptr, entries + col, live, PLAIN)
    wanted = code == CODE_NV24
    mbarrier.expect(staged.index(slot), v_desc.block_type.nbytes + m_desc.block_type.nbytes, pred=wanted)
    mbarrier.arrive(staged.index(slot), count=1, pred=live & (code != CODE_NV24))
    if PLAIN:  # values (N, K / 2) or int4 pairs (N, K / 4), metadata (N, K / 8)
        v_at, m_at = [row0, col * v_desc.block_type.shape[1]], [row0, col * (BLOCK_K // 8)]
    else:  # a tile row: 64 values, 16 metadata bytes
        row = (offset // BLOCK_K + first_row).to(gl.int32)
        v_at, m_at = [row, 0], [row, 0]
    tma.async_copy_global_to_shared(v_desc, v_at, staged.index(slot), vs.index(slot), pred=wanted)
    tma.async_copy_global_to_shared(m_desc, m_at, staged.index(slot), ms.index(slot), pred=wanted)


# Per 2:4 group: $2 holds its kept values (v0 low, v1 high), $3 its metadata nibble (v0's position in bits 0-1,
# v1's in 2-3). Byte p of `sel` picks the source bytes of the group's p-th weight for prmt: v0's (0x10), v1's
# (0x32) or the zero register's (0x54). $0 gets weights 0 and 1, $1 weights 2 and 3.
SELECT = """
shl.b32 low, NIBBLE, 3;
and.b32 low, low, 24;
shl.b32 high, NIBBLE, 1;
and.b32 high, high, 24;
mov.b32 sel, 0x44;
shl.b32 low, sel, low;
mov.b32 sel, 0x66;
shl.b32 high, sel, high;
xor.b32 sel, low, high;
xor.b32 sel, sel, 0x54545454;
mov.b32 zero, 0;
prmt.b32 $0, PAIR, zero, sel;
shr.b32 sel, sel, 16;
prmt.b32 $1, PAIR, zero, sel;
"""
PLACE = gl.constexpr("{ .reg .b32 low, high, sel, zero;" + SELECT.replace("NIBBLE", "$3").replace("PAIR", "$2") + "}")
# The kept pair of a 2:4 group of int4 values into `pair` (registers low, pair, c): BYTE holds the byte of its two
# values, SCALE / MINIMUM its half's scale / minimum twice. q | the 16-bit float 128 (bf16; fp16: 1024) is that
# float plus q: after subtracting it exactly, one fused multiply-add rounds q * s + m once, both values a go.
DEQUANTIZE_PAIR = """and.b32 pair, BYTE, 15;
shl.b32 low, BYTE, 12;
and.b32 low, low, 0xF0000;
or.b32 pair, pair, low;
mov.b32 c, MAGIC;
or.b32 pair, pair, c;
sub.rn.KIND pair, pair, c;
fma.rn.KIND pair, pair, SCALE, MINIMUM;
"""


def in_dtype(asm: str, bf16: bool) -> gl.constexpr:
    """`asm` with DEQUANTIZE_PAIR's constant and instructions for bf16 or fp16 values."""
    return gl.constexpr(asm.replace("MAGIC", "0x43004300" if bf16 else "0x64006400")
                        .replace("KIND", "bf16x2" if bf16 else "f16x2"))


# Per 2:4 group of int4 values: $2 (and $3) the byte of its two values, $4 / $6 its half's scale / minimum
# twice, $8 its nibble.
DEQUANTIZE = ("{ .reg .b32 low, high, sel, zero, pair, c;\n"
              + DEQUANTIZE_PAIR.replace("BYTE", "$2").replace("SCALE", "$4").replace("MINIMUM", "$6")
              + SELECT.replace("NIBBLE", "$8").replace("PAIR", "pair") + "}")
PLACE_BF16 = in_dtype(DEQUANTIZE, bf16=True)
PLACE_FP16 = in_dtype(DEQUANTIZE, bf16=False)


@gluon.jit
def place(v0, v1, meta):
    """Weight rows (BLOCK_N, 64), half a tile's, from the first and second kept values of its 16 groups (BLOCK_N,
    16) and its metadata bytes (BLOCK_N, 8): group g's two values at the 2-bit positions in nibble g % 2 of byte
    g // 2, zeros elsewhere."""
    nibbles = group_nibbles(meta, v0)
    low, high = gl.inline_asm_elementwise(PLACE, "=r,=r,r,r,r", [gl.join(v0, v1), gl.join(nibbles, nibbles)],
                                          dtype=(v0.dtype, v0.dtype), is_pure=True, pack=2)
    return in_input_order(low, high)


@gluon.jit
def group_nibbles(meta, like):
    """The metadata nibbles of 16 groups (BLOCK_N, 16) from their bytes (BLOCK_N, 8), in the layout of `like`."""
    return gl.convert_layout(gl.reshape(gl.join(meta & 15, meta >> 4), [meta.shape[0], 16]), like.type.layout)


@gluon.jit
def in_input_order(low, high):
    """Weight rows (BLOCK_N, 64) from each group's weights 0-1 (`low`) and 2-3 (`high`), (BLOCK_N, 16, 2)."""
    return gl.reshape(gl.permute(gl.join(low, high), (0, 1, 3, 2)), [low.shape[0], 64])


@gluon.jit
def place_int4(q, s2, m2, meta, dtype: gl.constexpr):
    """`place` for int4 values: q (BLOCK_N, 16) int32 holds each group's byte of two values, s2 and m2
    (BLOCK_N, 1) the half's scale and minimum twice in an int32."""
    nibbles = group_nibbles(meta, q)
    s2, _ = gl.broadcast(s2, q)
    m2, _ = gl.broadcast(m2, q)
    asm: gl.constexpr = PLACE_BF16 if dtype == gl.bfloat16 else PLACE_FP16
    low, high = gl.inline_asm_elementwise(asm, "=r,=r,r,r,r,r,r,r,r,r", [gl.join(q, q), gl.join(s2, s2),
                                          gl.join(m2, m2), gl.join(nibbles, nibbles)], dtype=(dtype.value, dtype.value),
                                          is_pure=True, pack=2)
    return in_input_order(low, high)


@gluon.jit
def store_expanded(vs, ms, slot, h: gl.constexpr, ws, stage, scale, minimum, LV: gl.constexpr,
                   LM: gl.constexpr, GROUP: gl.constexpr):
    """Half h of the staged NV24 rows, expanded, into the (BLOCK_N, 64) stage; int4 pairs (GROUP) dequantized
    with the half's scales and minimums (BLOCK_N, 1), each twice in an int32, in LV's rows."""
    BLOCK_N: gl.constexpr = vs.shape[1]
    meta = ms.index(slot).slice(8 * h, 8, dim=1).load(LM).to(gl.int32)
    if GROUP:  # a byte: a group's two int4 values
        q = vs.index(slot).slice(16 * h, 16, dim=1).load(LV).to(gl.int32)
        block = place_int4(q, scale, minimum, meta, ws.dtype)
    else:
        values = vs.index(slot).slice(32 * h, 32, dim=1).load(LV)
        v0, v1 = gl.split(gl.reshape(values, [BLOCK_N, 16, 2]))
        block = place(v0, v1, meta)
    ws.index(stage).store(block)


@gluon.jit
def quantization(scales_ptr, mins_ptr, row0, N, row_groups, col, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                 LV: gl.constexpr, GROUP: gl.constexpr):
    """((scales), (minimums)) of tile column `col`'s two halves, (BLOCK_N, 1) each, twice in an int32, for int4
    pairs (GROUP kept values a group); ((0, 0), (0, 0)) for 16-bit values."""
    if GROUP:
        rows = row0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LV))
        scales, mins = (), ()
        for h in gl.static_range(2):
            at = rows.to(gl.int64) * row_groups + (col * (BLOCK_K // 2) + h * (BLOCK_K // 4)) // GROUP
            scales = scales + (gl.expand_dims(packed_twice(gl.load(scales_ptr + at, mask=rows < N, other=0)), 1),)
            mins = mins + (gl.expand_dims(packed_twice(gl.load(mins_ptr + at, mask=rows < N, other=0)), 1),)
    else:
        scales, mins = (0, 0), (0, 0)
    return scales, mins


@gluon.jit
def produce(x_desc, w_desc, v_desc, m_desc, scales_ptr, mins_ptr, xs, ws, vs, ms, ready, empty, staged,
            formats_ptr, offsets_ptr, entries, first, end, pid_m, first_row, row0, N, row_groups,
            BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
            LV: gl.constexpr, LM: gl.constexpr, PLAIN: gl.constexpr, GROUP: gl.constexpr):
    """The producer: each half tile column's operands into its stage (module docstring)."""
    half: gl.constexpr = BLOCK_K // 2
    for early in gl.static_range(DEPTH):
        stage_nv24(v_desc, m_desc, vs, ms, staged, formats_ptr, offsets_ptr, entries, first + early, early,
                   first + early < end, first_row, row0, BLOCK_K, PLAIN)
    for col in range(first, end):
        i = col - first
        scales, mins = quantization(scales_ptr, mins_ptr, row0, N, row_groups, col, BLOCK_N, BLOCK_K, LV, GROUP)
        code, offset = tile_entry(formats_ptr, offsets_ptr, entries + col, True, PLAIN)
        present = code != CODE_ZERO
        dense = code == CODE_DENSE
        slot = i % DEPTH
        if code == CODE_NV24:
            mbarrier.wait(staged.index(slot), (i // DEPTH) & 1)
        for h in gl.static_range(2):
            j = 2 * i + h
            stage = j % STAGES
            mbarrier.wait(empty.index(stage), ((j // STAGES) & 1) ^ 1)
            mbarrier.expect(ready.index(stage), x_desc.block_type.nbytes + w_desc.block_type.nbytes, pred=dense)
            mbarrier.expect(ready.index(stage), x_desc.block_type.nbytes, pred=code == CODE_NV24)
            tma.async_copy_global_to_shared(x_desc, [pid_m * BLOCK_M, col * BLOCK_K + h * half],
                                            ready.index(stage), xs.index(stage), pred=present)
            tma.async_copy_global_to_shared(w_desc, [(offset // BLOCK_K + first_row).to(gl.int32), h * half],
                                            ready.index(stage), ws.index(stage), pred=dense)
            if code == CODE_NV24:
                store_expanded(vs, ms, slot, h, ws, stage, scales[h], mins[h], LV, LM, GROUP)
                hopper.fence_async_shared()
            mbarrier.arrive(ready.index(stage), count=1, pred=present)
            mbarrier.arrive(ready.index(stage), count=2, pred=code == CODE_ZERO)
        stage_nv24(v_desc, m_desc, vs, ms, staged, formats_ptr, offsets_ptr, entries, col + DEPTH, i + DEPTH,
                   col + DEPTH < end, first_row, row0, BLOCK_K, PLAIN)


@gluon.jit
def consume(ws, xs, ready, empty, formats_ptr, entries, first, end, BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr,
            STAGES: gl.constexpr, MMA: gl.constexpr, PLAIN: gl.constexpr):
    """The consumer: acc (BLOCK_N, BLOCK_M) over the slice's tile columns, the wgmma of two stages in flight
    where the ring has 4 or more (else one)."""
    IN_FLIGHT: gl.constexpr = 2 if STAGES >= 4 else 1
    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
    for col in range(first, end):
        i = col - first
        for h in gl.static_range(2):
            j = 2 * i + h
            stage = j % STAGES
            mbarrier.wait(ready.index(stage), (j // STAGES) & 1)
            if PLAIN or gl.load(formats_ptr + entries + col).to(gl.int32) != CODE_ZERO:
                acc = hopper.warpgroup_mma(ws.index(stage), xs.index(stage).permute((1, 0)), acc, is_async=True)
                acc = hopper.warpgroup_mma_wait(IN_FLIGHT, deps=[acc])
            else:
                acc = hopper.warpgroup_mma_wait(0, deps=[acc])
            # the stage IN_FLIGHT before retired: it is free
            mbarrier.arrive(empty.index((j + STAGES - IN_FLIGHT) % STAGES), count=1, pred=j >= IN_FLIGHT)
    return (hopper.warpgroup_mma_wait(0, deps=[acc]),)  # a tuple: triton 3.6 flattens the partition's results


@gluon.jit
def hybrid_wgmma_ws_kernel(x_desc, out_ptr, bias_ptr, formats_ptr, offsets_ptr, w_desc, v_desc, m_desc, scales_ptr,
                           mins_ptr, M, N, K, stride_xm, stride_xk, grid_cols, row_groups, HAS_BIAS: gl.constexpr,
                           BLOCK_M: gl.constexpr,
                           BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr,
                           USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr,
                           ROUND_BF16: gl.constexpr, STAGES: gl.constexpr, PRODUCERS: gl.constexpr,
                           PRODUCER_REGISTERS: gl.constexpr, LV: gl.constexpr, LM: gl.constexpr,
                           MMA: gl.constexpr, PLAIN: gl.constexpr, GROUP: gl.constexpr, PDL: gl.constexpr):
    """`hybrid_wgmma_kernel`'s arguments plus TMA descriptors of the NV24 values as (rows, 64) in x's dtype and
    of the metadata as (rows, 16) bytes, in boxes of BLOCK_N rows; the producer's warps, registers and layouts
    over a tile's values (BLOCK_N, 64) and metadata (BLOCK_N, 16). PLAIN: an NV24 weight instead (`nv24`), its
    values (N, K / 2) and metadata (N, K / 8) in (BLOCK_N, 64) and (BLOCK_N, 16) boxes; no grid is read. GROUP:
    an NV24_INT4 weight (PLAIN), its int4 pairs (N, K / 4) in (BLOCK_N, 32) boxes, scales and minimums
    (N, row_groups) as int16, of GROUP kept values each."""
    wait_for_inputs(PDL)
    pid_m, pid_n, first_row, entries, first, end = program_tiles(M, K, grid_cols, BLOCK_M, BLOCK_N, BLOCK_K,
                                                                 SPLIT_K)
    ws = gl.allocate_shared_memory(w_desc.dtype, [STAGES, BLOCK_N, BLOCK_K // 2], w_desc.layout)
    xs = gl.allocate_shared_memory(x_desc.dtype, [STAGES, BLOCK_M, BLOCK_K // 2], x_desc.layout)
    vs = gl.allocate_shared_memory(v_desc.dtype, [DEPTH, BLOCK_N, v_desc.block_type.shape[1]], v_desc.layout)
    ms = gl.allocate_shared_memory(m_desc.dtype, [DEPTH, BLOCK_N, BLOCK_K // 8], m_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    staged = gl.allocate_shared_memory(gl.int64, [DEPTH, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=2)
        mbarrier.init(empty.index(s), count=1)
    for s in gl.static_range(DEPTH):
        mbarrier.init(staged.index(s), count=1)
    acc, = gl.warp_specialize([
        (consume, (ws, xs, ready, empty, formats_ptr, entries, first, end, BLOCK_N, BLOCK_M, STAGES, MMA, PLAIN)),
        (produce, (x_desc, w_desc, v_desc, m_desc, scales_ptr, mins_ptr, xs, ws, vs, ms, ready, empty, staged,
                   formats_ptr, offsets_ptr, entries, first, end, pid_m, first_row, pid_n * BLOCK_N, N, row_groups,
                   BLOCK_M, BLOCK_N, BLOCK_K, STAGES, LV, LM, PLAIN, GROUP)),
    ], [PRODUCERS], [PRODUCER_REGISTERS])
    release_dependents(PDL)
    store_transposed(acc, out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M, BLOCK_N, SPLIT_K, MMA)


def producer_layouts(quantized: bool = False):
    """(LV over half a tile's kept values (BLOCK_N, 32): 16-byte reads, a warp 8 rows a pass; or over their int4
    pairs (BLOCK_N, 16 bytes), `quantized`: 4 bytes; LM over its metadata bytes (BLOCK_N, 8): a thread the 2
    bytes of its 4 groups, so that the nibbles land where their values are, with no conversion)."""
    return (gl.BlockedLayout([1, 4 if quantized else 8], [8, 4], [PRODUCERS, 1], [1, 0]),
            gl.BlockedLayout([1, 2], [8, 4], [PRODUCERS, 1], [1, 0]))


def staging_descriptors(values: torch.Tensor, meta: torch.Tensor, block_n: int):
    """TMA descriptors of 2-D NV24 values in (BLOCK_N, 64) boxes (int4 pairs, uint8: (BLOCK_N, 32)) and metadata
    in (BLOCK_N, 16) boxes: a HYBRID grid's buffers viewed as (rows, 64) and (rows, 16), or an NV24 weight's
    (N, K / 2) and (N, K / 8), or an NV24_INT4 weight's (N, K / 4) and (N, K / 8)."""
    bits = values.element_size() * 8
    shared = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=bits, rank=2)
    plain_bytes = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2)
    return (TensorDescriptor.from_tensor(values, [block_n, 64 if bits == 16 else 32], shared),
            TensorDescriptor.from_tensor(meta, [block_n, 16], plain_bytes))
