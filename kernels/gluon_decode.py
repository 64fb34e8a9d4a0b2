"""M == 1 kernels with explicit register layouts (Gluon), run on the GPU in place of `decode`'s Triton ones for
every decode layout: INT4, NV24, NV24_INT4, BSR_INT4 and HYBRID grids of DENSE / NV24 / ZERO tiles.

Why: in `decode`'s kernels Triton gives the word tile and the x values different layouts, so every K block's
words pass through shared memory, behind a barrier, on their way to the layout of the product. Here the host
picks one blocked layout per kernel and every tensor of the loop is a slice of it. For INT4, L over (rows,
groups, words, 8 nibbles):

    words  (BLOCK_N, G, W)    L without the nibble dim: each thread V consecutive words of a row (one 16-byte
                              load), W // V threads across a group's words, the rest of the warp and the warps
                              across groups first, then rows; R rows a thread
    x      (G, W, 8)          L without the rows: each thread the 8V inputs of its words (contiguous), the same
                              for every thread of a row group (broadcast loads that hit L1)
    scales, mins (BLOCK_N, G) one per row and group

so the nibble products, the per-word sums and the accumulator stay in registers; the only cross-thread step is
the final reduction. The others follow the same plan: NV24 over (rows, groups of 4, 4 inputs), its meta bytes
loaded in their own layout and their nibbles interleaved into the words' without moving between threads;
NV24_INT4 as INT4 over the kept values; BSR_INT4 over (kept blocks, rows, words, 8); HYBRID gives a thread the
same 8 inputs of a DENSE tile (16 bytes) and of an NV24 tile (2 value words, a meta byte). The arithmetic is
`decode`'s (module docstring there): f = 1 + q / 16 from one shift and one LOP3, d = sum f * x per word,
acc += 16 s * d + (m - 16 s) * sum x; but NV24, NV24_INT4 and HYBRID's NV24 tiles pick a group's two kept
inputs with one byte permute (PRMT) of its two bf16 pairs of x, not with `decode`'s selects: x is read as
int32 pairs (`x_as_pairs`). Every kernel loads its next K block (BSR_INT4 and HYBRID: their column indices or
tile entries two steps ahead) before computing the current one.

A layout never replicates an element: the host picks the widest loads, then the most warps, that cover the
block; a block too small for one warp (tiny K) runs `decode`'s Triton kernel. Gluon does not run under
TRITON_INTERPRET, so the CPU runs `decode`'s kernels, the same arithmetic; the GPU tests check these against
the reference, and tests/test_gluon_decode.py compiles them for sm_90 on any machine and checks their loops.
"""
from __future__ import annotations

import dataclasses

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .hybrid import CODE_DENSE, CODE_NV24, CODE_ZERO
from .pdl import release_dependents, wait_for_inputs


WORDS_PER_THREAD = (4, 2, 1)  # widest first: 4 words is one 16-byte load


@dataclasses.dataclass(frozen=True)
class Int4Layout:
    """The blocked layout of a (BLOCK_N, G, W, 8) INT4 block: per thread R rows of V words; threads and warps
    split rows (TN, WN), groups (TG, WG) and the W // V word slots of a group."""
    num_warps: int
    R: int
    V: int
    TN: int
    TG: int
    WN: int
    WG: int


def int4_layout(block_n: int, block_k: int, group: int, num_warps: int,
                widths=WORDS_PER_THREAD) -> Int4Layout | None:
    """A layout that covers the (block_n rows, block_k inputs) block without replicating any element: the widest
    word loads (of `widths` words a thread), then the most warps, that fit (None if even one warp is too many)."""
    words, groups = group // 8, block_k // group
    warps = num_warps
    while warps >= 1:
        for v in widths:
            slots = words // v
            if slots > 32:
                continue
            tg = min(groups, 32 // slots)
            tn = 32 // (slots * tg)
            wg = min(groups // tg, warps)
            wn = warps // wg
            if tn * wn <= block_n:
                return Int4Layout(warps, block_n // (tn * wn), v, tn, tg, wn, wg)
        warps //= 2
    return None


@gluon.jit
def group_block_indices(N, K, SPAN: gl.constexpr, BLOCK_N: gl.constexpr, G: gl.constexpr, W: gl.constexpr,
                        SPLIT_K: gl.constexpr, L: gl.constexpr):
    """The indices INT4 and NV24_INT4 share: their K blocks are G quantization groups of SPAN inputs, W words
    each, in layout L over (rows, groups, words, 8). Returns (rows, row_ok, row_groups, the first and end K block
    of this split-K slice, g_s (G,) and sm_at (BLOCK_N, G): the first block's groups and their scale index in
    each row, w_w (1, 1, W) and word_x (G, W, 1): the word within a group and x's word (8 values) of each, e
    (1, 1, 8) along x's last dim)."""
    LW: gl.constexpr = gl.SliceLayout(3, L)
    LS: gl.constexpr = gl.SliceLayout(2, LW)
    LX: gl.constexpr = gl.SliceLayout(0, L)
    rows = gl.program_id(0) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LS))
    row_groups = gl.cdiv(K, SPAN)
    per_split = gl.cdiv(gl.cdiv(row_groups, G), SPLIT_K)
    first = gl.program_id(1) * per_split
    end = gl.minimum(first + per_split, gl.cdiv(row_groups, G))
    g_s = first * G + gl.arange(0, G, layout=gl.SliceLayout(0, LS))
    w_w = gl.expand_dims(gl.expand_dims(gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(1, LW))), 0), 1)
    g_x = gl.expand_dims(gl.expand_dims(gl.arange(0, G, layout=gl.SliceLayout(1, gl.SliceLayout(2, LX))), 1), 2)
    w_x = gl.expand_dims(gl.expand_dims(gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(2, LX))), 0), 2)
    e = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, LX))), 0), 1)
    sm_at = gl.expand_dims(rows.to(gl.int64) * row_groups, 1) + gl.expand_dims(g_s, 0)
    return rows, rows < N, row_groups, first, end, g_s, sm_at, w_w, (first * G + g_x) * W + w_x, e


@gluon.jit
def int4_loads(scales_ptr, mins_ptr, q_ptrs, x_ptr, sm_at, word_x, i_x, row_ok, groups, row_groups, x_words,
               stride_xk):
    """(scales, mins, words, x fp32) of one K block; zero past the row's groups and past x's x_words words of 8
    inputs (pass 0 for none). x's mask is one per word: its 8 inputs load as one vector whatever K is."""
    ok = gl.expand_dims(row_ok, 1) & gl.expand_dims(groups < row_groups, 0)
    s = gl.load(scales_ptr + sm_at, mask=ok, other=0.0).to(gl.float32)
    m = gl.load(mins_ptr + sm_at, mask=ok, other=0.0).to(gl.float32)
    words = gl.load(q_ptrs, mask=gl.expand_dims(ok, 2), other=0)
    x = gl.load(x_ptr + (8 * word_x + i_x) * stride_xk, mask=word_x < x_words, other=0.0).to(gl.float32)
    return s, m, words, x


@gluon.jit
def int4_gemv_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk,
                     HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                     SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr,
                     PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr, GROUP: gl.constexpr, R: gl.constexpr,
                     V: gl.constexpr, TN: gl.constexpr, TG: gl.constexpr, WN: gl.constexpr, WG: gl.constexpr,
                     PDL: gl.constexpr):
    """q_ptr: int32 words (N, Kp / 8); the arguments of `decode.int4_decode_kernel` plus the layout."""
    wait_for_inputs(PDL)
    W: gl.constexpr = GROUP // 8
    G: gl.constexpr = BLOCK_K // GROUP
    L: gl.constexpr = gl.BlockedLayout([R, 1, V, 8], [TN, TG, W // V, 1], [WN, WG, 1, 1], [3, 2, 1, 0])
    LW: gl.constexpr = gl.SliceLayout(3, L)
    one = (N >> 31) | 0x3F800000  # fp32 1.0 held in a register: (nibble & mask) | one is one LOP3
    rows, row_ok, row_groups, first, end, g_s, sm_at, w_w, word_x, i_x = group_block_indices(
        N, K, GROUP, BLOCK_N, G, W, SPLIT_K, L)
    shift = gl.expand_dims(19 - 4 * i_x, 0)  # nibble i (bits 4i..4i+3) to bits 19..22, the mantissa's top
    q_ptrs = q_ptr + gl.expand_dims(sm_at, 2) * W + w_w
    x_words = K // 8
    acc = gl.zeros((BLOCK_N, G, W), gl.float32, layout=LW)
    s, m, words, x = int4_loads(scales_ptr, mins_ptr, q_ptrs, x_ptr, sm_at, word_x, i_x, row_ok, g_s, row_groups,
                                x_words, stride_xk)
    for step in range(first, end):
        ahead = (step + 1 - first) * G
        live = step + 1 < end
        s_n, m_n, words_n, x_n = int4_loads(scales_ptr, mins_ptr, q_ptrs + ahead * W, x_ptr, sm_at + ahead,
                                            word_x + ahead * W, i_x, row_ok & live, g_s + ahead, row_groups,
                                            gl.where(live, x_words, 0), stride_xk)
        w4 = gl.expand_dims(words, 3)
        moved = gl.where(shift >= 0, w4 << gl.maximum(shift, 0), w4 >> gl.maximum(-shift, 0))
        f = ((moved & 0x00780000) | one).to(gl.float32, bitcast=True)
        d = gl.sum(f * gl.expand_dims(x, 0), axis=3)
        xs = gl.convert_layout(gl.sum(x, axis=2), gl.SliceLayout(0, LW))  # the same registers: no data moves
        acc += gl.expand_dims(16 * s, 2) * d + gl.expand_dims(m - 16 * s, 2) * gl.expand_dims(xs, 0)
        s, m, words, x = s_n, m_n, words_n, x_n
    total = gl.sum(gl.sum(acc, axis=2), axis=1)
    release_dependents(PDL)
    store_rows(total, out_ptr, bias_ptr, rows, row_ok, N, HAS_BIAS, SPLIT_K)


@gluon.jit
def nv24_int4_loads(scales_ptr, mins_ptr, q_ptrs, meta_ptrs, pairs_ptr, sm_at, p_x, row_ok, groups, row_groups,
                    pairs_k):
    """(scales, mins, value words, meta words, x as int32 pairs of bf16) of one K block; zero past the row's
    quantization groups and past K (x: pass pairs_k = 0 for none)."""
    ok = gl.expand_dims(row_ok, 1) & gl.expand_dims(groups < row_groups, 0)
    s = gl.load(scales_ptr + sm_at, mask=ok, other=0.0).to(gl.float32)
    m = gl.load(mins_ptr + sm_at, mask=ok, other=0.0).to(gl.float32)
    words = gl.load(q_ptrs, mask=gl.expand_dims(ok, 2), other=0)
    meta = gl.load(meta_ptrs, mask=gl.expand_dims(ok, 2), other=0).to(gl.int32)
    x_pairs = gl.load(pairs_ptr + p_x, mask=p_x < pairs_k, other=0)
    return s, m, words, meta, x_pairs


@gluon.jit
def pair(x_pairs, j_x, j: gl.constexpr, LW: gl.constexpr):
    """Pair j along the last dim of x_pairs (int32, bf16 inputs 2j, 2j + 1), held in the registers of the
    weights' layout LW (the last dim is in-thread: nothing moves), with a leading dim of 1 for the rows."""
    last: gl.constexpr = len(x_pairs.shape) - 1
    return gl.expand_dims(gl.convert_layout(gl.sum(gl.where(j_x == j, x_pairs, 0), axis=last),
                                            gl.SliceLayout(0, LW)), 0)


@gluon.jit
def kept_inputs(low, high, nibbles):
    """(xa, xb) fp32: the inputs at the two kept positions a, b (nibble a | b << 2) of groups of 4 whose inputs
    are the bf16 pairs low = (x0, x1) and high = (x2, x3). One byte permute (PRMT) takes bytes 2a, 2a + 1, 2b,
    2b + 1 of high:low."""
    selector = 0x1010 + (nibbles & 3) * 0x22 + (nibbles & 0xC) * 0x880
    kept = gl.inline_asm_elementwise("prmt.b32 $0, $1, $2, $3;", "=r,r,r,r", [low, high, selector],
                                     dtype=gl.int32, is_pure=True, pack=1)
    return (kept << 16).to(gl.float32, bitcast=True), (kept & -65536).to(gl.float32, bitcast=True)


@gluon.jit
def nibble_as_float(words, I: gl.constexpr, one):
    """1 + q / 16 in fp32 for the nibble q at bits 4I..4I+3 of each word."""
    if 4 * I <= 19:
        moved = words << (19 - 4 * I)
    else:
        moved = words >> (4 * I - 19)
    return ((moved & 0x00780000) | one).to(gl.float32, bitcast=True)


@gluon.jit
def nv24_int4_gemv_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, meta_ptr, M, N, K, stride_xm,
                          stride_xk, pairs_k, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                          BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr,
                          DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr,
                          GROUP: gl.constexpr, R: gl.constexpr, V: gl.constexpr, TN: gl.constexpr,
                          TG: gl.constexpr, WN: gl.constexpr, WG: gl.constexpr, PDL: gl.constexpr):
    """q_ptr: int32 words (N, Kp / 16), 4 groups of 4 inputs each (a byte a group: v0 low nibble, v1 high);
    meta_ptr: int16 words, the same 4 groups' 2-bit positions; a quantization group spans 2 * GROUP inputs, W =
    GROUP / 8 words. x is read as pairs_k = ceil(K / 2) int32 pairs of bf16 (`x_as_pairs` makes it so). The
    arguments of `decode.nv24_int4_decode_kernel` plus the layout (an INT4 layout over the kept values, V words
    a thread). The two kept inputs of a group are picked with one byte permute (`kept_inputs`)."""
    wait_for_inputs(PDL)
    W: gl.constexpr = GROUP // 8
    G: gl.constexpr = BLOCK_K // (2 * GROUP)
    L: gl.constexpr = gl.BlockedLayout([R, 1, V, 8], [TN, TG, W // V, 1], [WN, WG, 1, 1], [3, 2, 1, 0])
    LW: gl.constexpr = gl.SliceLayout(3, L)
    one = (N >> 31) | 0x3F800000
    pairs_ptr = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    rows, row_ok, row_groups, first, end, g_s, sm_at, w_w, word_x, j_x = group_block_indices(
        N, K, 2 * GROUP, BLOCK_N, G, W, SPLIT_K, L)
    word_at = gl.expand_dims(sm_at, 2) * W + w_w
    p_x = 8 * word_x + j_x  # a word's 16 inputs are 8 pairs
    acc = gl.zeros((BLOCK_N, G, W), gl.float32, layout=LW)
    s, m, words, meta, x_pairs = nv24_int4_loads(scales_ptr, mins_ptr, q_ptr + word_at, meta_ptr + word_at,
                                                 pairs_ptr, sm_at, p_x, row_ok, g_s, row_groups, pairs_k)
    for step in range(first, end):
        ahead = (step + 1 - first) * G
        live = step + 1 < end
        s_n, m_n, words_n, meta_n, x_pairs_n = nv24_int4_loads(
            scales_ptr, mins_ptr, q_ptr + word_at + ahead * W, meta_ptr + word_at + ahead * W, pairs_ptr,
            sm_at + ahead, p_x + ahead * (8 * W), row_ok & live, g_s + ahead, row_groups, gl.where(live, pairs_k, 0))
        d = gl.zeros((BLOCK_N, G, W), gl.float32, layout=LW)
        xs = gl.zeros((BLOCK_N, G, W), gl.float32, layout=LW)
        for j in gl.static_range(4):  # the word's group j: inputs 4j .. 4j + 3 (pairs 2j, 2j + 1), byte j
            xa, xb = kept_inputs(pair(x_pairs, j_x, 2 * j, LW), pair(x_pairs, j_x, 2 * j + 1, LW), meta >> (4 * j))
            d = d + nibble_as_float(words, 2 * j, one) * xa  # one FFMA each
            d = d + nibble_as_float(words, 2 * j + 1, one) * xb
            xs = xs + xa
            xs = xs + xb
        acc += gl.expand_dims(16 * s, 2) * d + gl.expand_dims(m - 16 * s, 2) * xs
        s, m, words, meta, x_pairs = s_n, m_n, words_n, meta_n, x_pairs_n
    release_dependents(PDL)
    store_rows(gl.sum(gl.sum(acc, axis=2), axis=1), out_ptr, bias_ptr, rows, row_ok, N, HAS_BIAS, SPLIT_K)


@dataclasses.dataclass(frozen=True)
class Nv24Layout:
    """The blocked layout of a (BLOCK_N, Q, 4) NV24 block (Q groups of 4 inputs, one value word and one meta
    nibble each): per thread R rows of 2V groups (V meta bytes); threads and warps split rows (TN, WN) and
    groups (TP, WP)."""
    num_warps: int
    R: int
    V: int
    TN: int
    TP: int
    WN: int
    WP: int


def nv24_layout(block_n: int, block_k: int, num_warps: int) -> Nv24Layout | None:
    """A layout that covers the (block_n rows, block_k inputs) block without replicating any element: the widest
    loads (8 value words and 4 meta bytes a thread), then the most warps, that fit (None if even one warp is
    too many)."""
    meta_bytes = block_k // 8
    warps = num_warps
    while warps >= 1:
        for v in (4, 2, 1):
            if meta_bytes % v:
                continue
            tp = min(meta_bytes // v, 32)
            tn = 32 // tp
            wp = min(meta_bytes // (v * tp), warps)
            wn = warps // wp
            if tn * wn <= block_n and meta_bytes % (v * tp * wp) == 0:
                return Nv24Layout(warps, block_n // (tn * wn), v, tn, tp, wn, wp)
        warps //= 2
    return None


@gluon.jit
def nv24_loads(values_ptr, meta_ptr, meta_at, word_at, pairs_ptr, quad_x, j_x, meta_ok, word_ok, x_quads,
               LW: gl.constexpr):
    """(meta nibble of each group, value word of each group (BLOCK_N, Q) int32, x as int32 pairs of bf16
    (Q, 2)) of one K block; zero where not ok and past x's x_quads groups of 4 inputs (pass 0 for none). The
    meta bytes load in their own layout (V a thread) and their two nibbles interleave into the words' layout
    without moving between threads."""
    meta = gl.load(meta_ptr + meta_at, mask=meta_ok, other=0).to(gl.int32)
    nibbles = gl.reshape(gl.join(meta & 0xF, meta >> 4), [meta.shape[0], 2 * meta.shape[1]])
    words = gl.load(values_ptr + word_at, mask=word_ok, other=0)
    x_pairs = gl.load(pairs_ptr + 2 * quad_x + j_x, mask=quad_x < x_quads, other=0)
    return gl.convert_layout(nibbles, LW), words, x_pairs


@gluon.jit
def nv24_gemv_kernel(x_ptr, out_ptr, bias_ptr, values_ptr, meta_ptr, M, N, K, stride_xm, stride_xk, row_bytes,
                     HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                     SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr,
                     PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr, R: gl.constexpr, V: gl.constexpr,
                     TN: gl.constexpr, TP: gl.constexpr, WN: gl.constexpr, WP: gl.constexpr, PDL: gl.constexpr):
    """values_ptr: int32 words (N, Kp / 4), the two bf16 values of a group of 4; meta_ptr: uint8 (N, Kp / 8);
    row_bytes = Kp / 8 (an argument, so that its alignment is known); x read as int32 pairs of bf16
    (`x_as_pairs`). The arguments of `decode.nv24_decode_kernel` plus those."""
    wait_for_inputs(PDL)
    P: gl.constexpr = BLOCK_K // 8
    Q: gl.constexpr = 2 * P
    L: gl.constexpr = gl.BlockedLayout([R, 2 * V, 2], [TN, TP, 1], [WN, WP, 1], [2, 1, 0])
    LW: gl.constexpr = gl.SliceLayout(2, L)
    LM: gl.constexpr = gl.BlockedLayout([R, V], [TN, TP], [WN, WP], [1, 0])
    LX: gl.constexpr = gl.SliceLayout(0, L)
    rows = gl.program_id(0) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LW))
    rows_m = gl.program_id(0) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LM))
    row_ok = rows < N
    steps = gl.cdiv(row_bytes, P)
    per_split = gl.cdiv(steps, SPLIT_K)
    first = gl.program_id(1) * per_split
    end = gl.minimum(first + per_split, steps)
    pairs = first * P + gl.arange(0, P, layout=gl.SliceLayout(0, LM))
    groups = first * Q + gl.arange(0, Q, layout=gl.SliceLayout(0, LW))
    meta_at = gl.expand_dims(rows_m.to(gl.int64) * row_bytes, 1) + gl.expand_dims(pairs, 0)
    meta_rows_ok = gl.expand_dims(rows_m < N, 1)
    word_at = gl.expand_dims(rows.to(gl.int64) * (2 * row_bytes), 1) + gl.expand_dims(groups, 0)
    pairs_ptr = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    q_x = gl.expand_dims(gl.arange(0, Q, layout=gl.SliceLayout(1, LX)), 1)
    j_x = gl.expand_dims(gl.arange(0, 2, layout=gl.SliceLayout(0, LX)), 0)
    quad_x = first * Q + q_x
    x_quads = K // 4
    acc = gl.zeros((BLOCK_N, Q), gl.float32, layout=LW)
    nibbles, words, x_pairs = nv24_loads(values_ptr, meta_ptr, meta_at, word_at, pairs_ptr, quad_x, j_x,
                                         meta_rows_ok & gl.expand_dims(pairs < row_bytes, 0),
                                         gl.expand_dims(row_ok, 1) & gl.expand_dims(groups < 2 * row_bytes, 0),
                                         x_quads, LW)
    for step in range(first, end):
        ahead = step + 1 - first
        live = step + 1 < end
        nibbles_n, words_n, x_pairs_n = nv24_loads(
            values_ptr, meta_ptr, meta_at + ahead * P, word_at + ahead * Q, pairs_ptr, quad_x + ahead * Q, j_x,
            meta_rows_ok & gl.expand_dims((pairs + ahead * P < row_bytes) & live, 0),
            gl.expand_dims(row_ok, 1) & gl.expand_dims((groups + ahead * Q < 2 * row_bytes) & live, 0),
            gl.where(live, x_quads, 0), LW)
        xa, xb = kept_inputs(pair(x_pairs, j_x, 0, LW), pair(x_pairs, j_x, 1, LW), nibbles)
        acc = acc + (words << 16).to(gl.float32, bitcast=True) * xa  # one FFMA each
        acc = acc + (words & -65536).to(gl.float32, bitcast=True) * xb
        nibbles, words, x_pairs = nibbles_n, words_n, x_pairs_n
    release_dependents(PDL)
    store_rows(gl.sum(acc, axis=1), out_ptr, bias_ptr, rows, row_ok, N, HAS_BIAS, SPLIT_K)


@dataclasses.dataclass(frozen=True)
class BsrLayout:
    """The blocked layout of BLOCK_B kept blocks (BLOCK_B, BLOCK_N, W, 8) of a BSR_INT4 block row: per thread R
    rows of V words of one block; threads split blocks (TB), rows (TN) and a row's W // V word slots; warps
    split blocks (WB) and rows (WN)."""
    num_warps: int
    R: int
    V: int
    TB: int
    TN: int
    WB: int
    WN: int


def bsr_layout(block_b: int, block_n: int, group: int, num_warps: int) -> BsrLayout | None:
    """A layout that covers block_b blocks without replicating any element: the widest word loads, then the
    most warps, that fit (None if even one warp is too many)."""
    words = group // 8
    warps = num_warps
    while warps >= 1:
        for v in WORDS_PER_THREAD:
            slots = words // v
            tn = min(block_n, 32 // slots)
            tb = 32 // (slots * tn)
            wb = min(max(1, block_b // tb), warps)
            wn = warps // wb
            if tb * wb <= block_b and tn * wn <= block_n:
                return BsrLayout(warps, block_n // (tn * wn), v, tb, tn, wb, wn)
        warps //= 2
    return None


@gluon.jit
def bsr_block_loads(q_ptr, scales_ptr, mins_ptr, x_ptr, blocks_s, ok_s, w_w, cols, ok_x, w_x, i_x, x_words,
                    stride_xk, BLOCK_N: gl.constexpr, W: gl.constexpr, GROUP: gl.constexpr):
    """(scales, mins (BLOCK_B, BLOCK_N), words (BLOCK_B, BLOCK_N, W), x fp32 (BLOCK_B, W, 8)) of the kept blocks
    `blocks_s` (x at their columns `cols`, x_words words of 8 inputs); zero where not ok."""
    at = gl.expand_dims(blocks_s, 1) * BLOCK_N + gl.expand_dims(gl.arange(0, BLOCK_N, layout=gl.SliceLayout(
        0, gl.SliceLayout(2, w_w.type.layout))), 0)
    ok = gl.expand_dims(ok_s, 1)
    s = gl.load(scales_ptr + at, mask=ok, other=0.0).to(gl.float32)
    m = gl.load(mins_ptr + at, mask=ok, other=0.0).to(gl.float32)
    words = gl.load(q_ptr + gl.expand_dims(at, 2) * W + w_w, mask=gl.expand_dims(ok, 2), other=0)
    word = gl.expand_dims(gl.expand_dims(cols * W, 1), 2) + w_x
    ok = gl.expand_dims(gl.expand_dims(ok_x, 1), 2) & (word < x_words)
    x = gl.load(x_ptr + (8 * word + i_x) * stride_xk, mask=ok, other=0.0)
    return s, m, words, x.to(gl.float32)


@gluon.jit
def bsr_int4_gemv_kernel(x_ptr, out_ptr, bias_ptr, row_ptr, col_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K,
                         stride_xm, stride_xk, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr,
                         BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr,
                         USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr,
                         ROUND_BF16: gl.constexpr, BLOCK_B: gl.constexpr, R: gl.constexpr, V: gl.constexpr,
                         TB: gl.constexpr, TN: gl.constexpr, WB: gl.constexpr, WN: gl.constexpr, PDL: gl.constexpr):
    """The arguments of `decode.bsr_int4_decode_kernel` (BLOCK_N = block_n, BLOCK_K = group) plus the layout.
    Column indices are loaded two block sets ahead and the blocks one ahead, so that no load waits on another
    inside the loop."""
    wait_for_inputs(PDL)
    W: gl.constexpr = BLOCK_K // 8
    STRIDE: gl.constexpr = SPLIT_K * BLOCK_B
    L: gl.constexpr = gl.BlockedLayout([1, R, V, 8], [TB, TN, W // V, 1], [WB, WN, 1, 1], [3, 2, 1, 0])
    LW: gl.constexpr = gl.SliceLayout(3, L)
    LS: gl.constexpr = gl.SliceLayout(2, LW)
    LX: gl.constexpr = gl.SliceLayout(1, L)
    one = (N >> 31) | 0x3F800000
    pid_n, pid_k = gl.program_id(0), gl.program_id(1)
    first = gl.load(row_ptr + pid_n)
    count = gl.load(row_ptr + pid_n + 1) - first
    ids_s = gl.arange(0, BLOCK_B, layout=gl.SliceLayout(1, LS))
    ids_x = gl.arange(0, BLOCK_B, layout=gl.SliceLayout(1, gl.SliceLayout(2, LX)))
    w_w = gl.expand_dims(gl.expand_dims(gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(1, LW))), 0), 1)
    w_x = gl.expand_dims(gl.expand_dims(gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(2, LX))), 0), 2)
    i_x = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, LX))), 0), 1)
    shift = gl.expand_dims(19 - 4 * i_x, 1)
    i0 = pid_k * BLOCK_B
    ok_x = i0 + ids_x < count
    cols = gl.load(col_ptr + first + i0 + ids_x, mask=ok_x, other=0).to(gl.int32)
    s, m, words, x = bsr_block_loads(q_ptr, scales_ptr, mins_ptr, x_ptr, (first + i0 + ids_s).to(gl.int64),
                                     i0 + ids_s < count, w_w, cols, ok_x, w_x, i_x, K // 8, stride_xk, BLOCK_N, W,
                                     BLOCK_K)
    ok_x_n = i0 + STRIDE + ids_x < count
    cols_n = gl.load(col_ptr + first + i0 + STRIDE + ids_x, mask=ok_x_n, other=0).to(gl.int32)
    acc = gl.zeros((BLOCK_B, BLOCK_N, W), gl.float32, layout=LW)
    for i in range(i0, count, STRIDE):
        ok_x_nn = i + 2 * STRIDE + ids_x < count
        cols_nn = gl.load(col_ptr + first + i + 2 * STRIDE + ids_x, mask=ok_x_nn, other=0).to(gl.int32)
        s_n, m_n, words_n, x_n = bsr_block_loads(q_ptr, scales_ptr, mins_ptr, x_ptr,
                                                 (first + i + STRIDE + ids_s).to(gl.int64),
                                                 i + STRIDE + ids_s < count, w_w, cols_n, ok_x_n, w_x, i_x,
                                                 K // 8, stride_xk, BLOCK_N, W, BLOCK_K)
        w4 = gl.expand_dims(words, 3)
        moved = gl.where(shift >= 0, w4 << gl.maximum(shift, 0), w4 >> gl.maximum(-shift, 0))
        f = ((moved & 0x00780000) | one).to(gl.float32, bitcast=True)
        d = gl.sum(f * gl.expand_dims(x, 1), axis=3)
        xs = gl.convert_layout(gl.sum(x, axis=2), gl.SliceLayout(1, LW))
        acc += gl.expand_dims(16 * s, 2) * d + gl.expand_dims(m - 16 * s, 2) * gl.expand_dims(xs, 1)
        s, m, words, x = s_n, m_n, words_n, x_n
        cols_n, ok_x_n = cols_nn, ok_x_nn
    total = gl.sum(gl.sum(acc, axis=2), axis=0)
    rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, LS))
    release_dependents(PDL)
    store_rows(total, out_ptr, bias_ptr, rows, rows < N, N, HAS_BIAS, SPLIT_K)


@dataclasses.dataclass(frozen=True)
class HybridLayout:
    """The blocked layout of a (BLOCK_N, TILE) block of a HYBRID tile: per thread R rows of 8 inputs (a DENSE
    tile's 16 bytes, an NV24 tile's 2 value words and meta byte); TILE / 8 threads across the tile, the other
    threads (TN) and every warp (WN) across rows."""
    num_warps: int
    R: int
    TN: int
    WN: int


def hybrid_layout(block_n: int, tile: int, num_warps: int) -> HybridLayout | None:
    """The most warps whose layout covers block_n rows of a tile without replicating any (None if none)."""
    threads_across = tile // 8
    tn = 32 // threads_across
    warps = num_warps
    while warps >= 1 and tn * warps > block_n:
        warps //= 2
    return HybridLayout(warps, block_n // (tn * warps), tn, warps) if warps >= 1 else None


@gluon.jit
def tile_entry(formats_ptr, offsets_ptr, grid_cols, tile_row, col, live):
    """(format code, stored offset) of tile (tile_row, col); ZERO's code (nothing loaded) unless `live`."""
    code = gl.load(formats_ptr + tile_row * grid_cols + col, mask=live, other=CODE_ZERO).to(gl.int32)
    return code, gl.load(offsets_ptr + tile_row * grid_cols + col, mask=live, other=0)


@gluon.jit
def hybrid_tile_loads(dense_ptr, values_ptr, meta_ptr, x_ptr, code, base, col, rows_d, rows_m, rows_w, K,
                      stride_xk, k_d, k_q, pairs, groups, TILE: gl.constexpr, HAS_DENSE: gl.constexpr,
                      HAS_NV24: gl.constexpr, ALIGNED: gl.constexpr, LW: gl.constexpr):
    """(dense (BLOCK_N, TILE) bf16, NV24 meta nibbles and value words (BLOCK_N, TILE / 4), x for each: fp32 for
    DENSE, int32 pairs of bf16 for NV24) of tile column `col`, whose format is `code` and offset `base`: each
    format's loads masked off unless the tile is of that format."""
    width = gl.minimum(K - col * TILE, TILE)
    if ALIGNED:  # K % 8 == 0: every tile offset and width is a multiple of 8 weights. Rounding them says so to
        base, width = base // 8 * 8, width // 8 * 8  # the compiler (16-byte loads); a hint is lost in the loop
        quads, halves = width // 4, width // 2
    else:  # the last column may end in a partial group of 4 inputs (and pair)
        quads, halves = gl.cdiv(width, 4), gl.cdiv(width, 2)
    dense = gl.zeros((1, 1), gl.bfloat16, layout=gl.SliceLayout(2, LW.parent))
    nibbles = gl.zeros((1, 1), gl.int32, layout=LW)
    words = gl.zeros((1, 1), gl.int32, layout=LW)
    x_d = gl.zeros((1,), gl.float32, layout=gl.SliceLayout(0, gl.SliceLayout(2, LW.parent)))
    x_q = gl.zeros((1, 1), gl.int32, layout=gl.SliceLayout(0, LW.parent))
    if HAS_DENSE:
        is_dense = code == CODE_DENSE
        ok = gl.expand_dims(rows_d[1] & is_dense, 1) & gl.expand_dims(k_d < width, 0)
        at = gl.expand_dims(base + rows_d[0].to(gl.int64) * width, 1) + gl.expand_dims(k_d, 0)
        dense = gl.load(dense_ptr + at, mask=ok, other=0.0)
        x_d = gl.load(x_ptr + (col * TILE + k_d) * stride_xk, mask=(k_d < width) & is_dense, other=0.0)
        x_d = x_d.to(gl.float32)
    if HAS_NV24:
        is_nv24 = code == CODE_NV24
        row_bytes = (base + rows_m[0].to(gl.int64) * (gl.cdiv(width, 8) * 8)) // 8
        ok = gl.expand_dims(rows_m[1] & is_nv24, 1) & gl.expand_dims(8 * pairs < width, 0)
        meta = gl.load(meta_ptr + gl.expand_dims(row_bytes, 1) + gl.expand_dims(pairs, 0), mask=ok,
                       other=0).to(gl.int32)
        nibbles = gl.convert_layout(gl.reshape(gl.join(meta & 0xF, meta >> 4), [meta.shape[0], 2 * meta.shape[1]]),
                                    LW)
        word_rows = (base + rows_w[0].to(gl.int64) * (gl.cdiv(width, 8) * 8)) // 4
        if ALIGNED:
            word_rows = gl.multiple_of(word_rows, 2)
        ok = gl.expand_dims(rows_w[1] & is_nv24, 1) & gl.expand_dims(groups < quads, 0)
        words = gl.load(values_ptr + gl.expand_dims(word_rows, 1) + gl.expand_dims(groups, 0), mask=ok, other=0)
        pairs_ptr = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
        x_q = gl.load(pairs_ptr + col * (TILE // 2) + k_q, mask=(k_q < halves) & is_nv24, other=0)
    return dense, x_d, nibbles, words, x_q


@gluon.jit
def hybrid_gemv_kernel(x_ptr, out_ptr, bias_ptr, formats_ptr, offsets_ptr, dense_ptr, values_ptr, meta_ptr, M, N, K,
                       stride_xm, stride_xk, grid_cols, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr,
                       BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr,
                       DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr,
                       HAS_DENSE: gl.constexpr, HAS_NV24: gl.constexpr, ALIGNED: gl.constexpr, R: gl.constexpr,
                       TN: gl.constexpr, WN: gl.constexpr, PDL: gl.constexpr):
    """The arguments of `decode.hybrid_decode_kernel` (BLOCK_K = the tile) plus the layout. A DENSE block is
    (BLOCK_N, TILE) in layout LD, an NV24 block (BLOCK_N, TILE / 4 groups, 2 pairs of inputs) in L: both give a
    thread the same 8 inputs, so x is loaded for each in its own layout from the same addresses (for NV24 as
    int32 pairs of bf16, `x_as_pairs`)."""
    wait_for_inputs(PDL)
    TILE: gl.constexpr = BLOCK_K
    TK: gl.constexpr = TILE // 8
    LD: gl.constexpr = gl.BlockedLayout([R, 8], [TN, TK], [WN, 1], [1, 0])
    L: gl.constexpr = gl.BlockedLayout([R, 2, 2], [TN, TK, 1], [WN, 1, 1], [2, 1, 0])
    LW: gl.constexpr = gl.SliceLayout(2, L)
    LM: gl.constexpr = gl.BlockedLayout([R, 1], [TN, TK], [WN, 1], [1, 0])
    LX: gl.constexpr = gl.SliceLayout(0, L)
    pid_n = gl.program_id(0)
    tile_row = pid_n * BLOCK_N // TILE
    rows_in = gl.minimum(N - tile_row * TILE, TILE)
    first_row = pid_n * BLOCK_N - tile_row * TILE  # inside the tile
    rows_d = first_row + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LD))
    rows_m = first_row + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LM))
    rows_w = first_row + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LW))
    k_d = gl.arange(0, TILE, layout=gl.SliceLayout(0, LD))
    pairs = gl.arange(0, TILE // 8, layout=gl.SliceLayout(0, LM))
    groups = gl.arange(0, TILE // 4, layout=gl.SliceLayout(0, LW))
    j_x = gl.expand_dims(gl.arange(0, 2, layout=gl.SliceLayout(0, LX)), 0)
    k_q = 2 * gl.expand_dims(gl.arange(0, TILE // 4, layout=gl.SliceLayout(1, LX)), 1) + j_x  # pairs in the tile
    per_split = gl.cdiv(grid_cols, SPLIT_K)
    first = gl.program_id(1) * per_split
    end = gl.minimum(first + per_split, grid_cols)
    acc_d = gl.zeros((BLOCK_N, TILE), gl.float32, layout=LD)
    acc_q = gl.zeros((BLOCK_N, TILE // 4), gl.float32, layout=LW)
    rows = ((rows_d, rows_d < rows_in), (rows_m, rows_m < rows_in), (rows_w, rows_w < rows_in))
    code, base = tile_entry(formats_ptr, offsets_ptr, grid_cols, tile_row, first, first < end)
    dense, x_d, nibbles, words, x_q = hybrid_tile_loads(dense_ptr, values_ptr, meta_ptr, x_ptr, code, base, first,
                                                        *rows, K, stride_xk, k_d, k_q, pairs, groups, TILE,
                                                        HAS_DENSE, HAS_NV24, ALIGNED, LW)
    code, base = tile_entry(formats_ptr, offsets_ptr, grid_cols, tile_row, first + 1, first + 1 < end)
    for col in range(first, end):
        # tile entries two columns ahead, weights one column ahead: no load waits on another in the loop
        code_n, base_n = tile_entry(formats_ptr, offsets_ptr, grid_cols, tile_row, col + 2, col + 2 < end)
        dense_n, x_d_n, nibbles_n, words_n, x_q_n = hybrid_tile_loads(
            dense_ptr, values_ptr, meta_ptr, x_ptr, code, base, col + 1, *rows, K, stride_xk, k_d, k_q, pairs,
            groups, TILE, HAS_DENSE, HAS_NV24, ALIGNED, LW)
        if HAS_DENSE:
            acc_d += dense.to(gl.float32) * gl.expand_dims(x_d, 0)
        if HAS_NV24:
            xa, xb = kept_inputs(pair(x_q, j_x, 0, LW), pair(x_q, j_x, 1, LW), nibbles)
            acc_q = acc_q + (words << 16).to(gl.float32, bitcast=True) * xa
            acc_q = acc_q + (words & -65536).to(gl.float32, bitcast=True) * xb
        dense, x_d, nibbles, words, x_q = dense_n, x_d_n, nibbles_n, words_n, x_q_n
        code, base = code_n, base_n
    total = gl.convert_layout(gl.sum(acc_d, axis=1), gl.SliceLayout(1, LW)) + gl.sum(acc_q, axis=1)
    out_rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LW))
    release_dependents(PDL)
    store_rows(total, out_ptr, bias_ptr, out_rows, rows_w < rows_in, N, HAS_BIAS, SPLIT_K)


@gluon.jit
def store_rows(total, out_ptr, bias_ptr, rows, row_ok, N, HAS_BIAS: gl.constexpr, SPLIT_K: gl.constexpr):
    """out[rows] = total + bias, cast; with split-K the fp32 partial of slice program_id(1)."""
    if SPLIT_K == 1:
        if HAS_BIAS:
            total += gl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(gl.float32)
        gl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty), mask=row_ok)
    else:
        gl.store(out_ptr + gl.program_id(1) * N + rows, total, mask=row_ok)


KERNELS = {"int4": int4_gemv_kernel, "nv24": nv24_gemv_kernel, "nv24_int4": nv24_int4_gemv_kernel,
           "bsr_int4": bsr_int4_gemv_kernel, "hybrid": hybrid_gemv_kernel}
LAYOUTS = tuple(KERNELS)


def x_as_pairs(x2d: torch.Tensor) -> torch.Tensor:
    """x2d, or a copy of it with a zero appended to an odd K, that reads as 4-byte aligned int32 pairs (the
    copy only for a strided, misaligned or odd-K x)."""
    k = x2d.shape[1]
    if x2d.stride(1) == 1 and x2d.data_ptr() % 4 == 0 and k % 2 == 0:
        return x2d
    pairs = x2d.new_zeros(x2d.shape[0], k + k % 2)
    pairs[:, :k] = x2d
    return pairs


def explicit_kernel(layout: str, block_n: int, block_k: int, dims, config, dtype: torch.dtype):
    """(kernel, arguments it takes after those of `decode`'s kernel, constexprs with num_warps) of `layout`'s
    kernel for (block_n x block_k) blocks of a weight of `dims`, launched with `config` (a `decode.Config`), x
    in `dtype`; None where the layout has no such kernel (NV24_INT4 reads x as bf16 pairs: other dtypes; INT4,
    NV24 and BSR_INT4 mask x a word of 8 inputs at a time: K % 8 != 0; INT4 and BSR_INT4 share the scale over a
    group, which fp32 x would see round: fp32) or the block is too small to spread over one warp (tiny K):
    `decode`'s Triton kernel runs then."""
    warps = config.num_warps
    if layout == "nv24_int4" and dtype != torch.bfloat16 or layout in ("int4", "nv24", "bsr_int4") and dims[1] % 8:
        return None
    if layout in ("int4", "bsr_int4") and dtype == torch.float32:
        return None
    if layout == "int4":
        chosen, extra = int4_layout(block_n, block_k, dims[2], warps), ()
    elif layout == "nv24":
        chosen, extra = nv24_layout(block_n, block_k, warps), (-(-dims[1] // 8),)
    elif layout == "nv24_int4":  # the layout of INT4 over the kept values, at most 2 words (32 inputs) a thread
        chosen, extra = int4_layout(block_n, block_k // 2, dims[2], warps, widths=(2, 1)), (-(-dims[1] // 2),)
    elif layout == "hybrid":
        chosen, extra = hybrid_layout(block_n, block_k, warps), ()
    elif layout == "bsr_int4":  # block_n x block_k is one stored block; the config's block_n counts blocks
        chosen, extra = bsr_layout(config.block_n, block_n, block_k, warps), ()
    else:
        return None
    return None if chosen is None else (KERNELS[layout], extra, dataclasses.asdict(chosen))
