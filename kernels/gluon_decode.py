"""M == 1 kernels with explicit register layouts (Gluon), run on the GPU in place of `decode`'s Triton ones.

Why: in `decode`'s INT4 kernel Triton gives the word tile and the x values different layouts, so every K block's
words pass through shared memory, behind a barrier, on their way to the layout of the product. Here the host
picks one blocked layout L over (rows, groups, words, 8 nibbles) and every tensor of the loop is a slice of it:

    words  (BLOCK_N, G, W)    L without the nibble dim: each thread V consecutive words of a row (one 16-byte
                              load), W // V threads across a group's words, the rest of the warp and the warps
                              across groups first, then rows; R rows a thread
    x      (G, W, 8)          L without the rows: each thread the 8V inputs of its words (contiguous), the same
                              for every thread of a row group (broadcast loads that hit L1)
    scales, mins (BLOCK_N, G) one per row and group

so the nibble products, the per-word sums and the accumulator stay in registers; the only cross-thread step is
the final reduction. The arithmetic is `decode`'s (module docstring there): f = 1 + q / 16 from one shift and
one LOP3, d = sum f * x per word, acc += 16 s * d + (m - 16 s) * sum x.

Gluon does not run under TRITON_INTERPRET, so the CPU runs `decode.int4_decode_kernel`, the same arithmetic;
the GPU tests check this kernel against the reference.
"""
from __future__ import annotations

import dataclasses

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from sparc.errors import SparcError

LAYOUTS = ("int4",)
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


def int4_layout(block_n: int, block_k: int, group: int, num_warps: int) -> Int4Layout:
    """A layout that covers the (block_n rows, block_k inputs) block without replicating any element: the widest
    word loads, then the most warps, that fit."""
    words, groups = group // 8, block_k // group
    warps = num_warps
    while warps >= 1:
        for v in WORDS_PER_THREAD:
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
    raise SparcError(f"int4 decode: no register layout for {block_n} rows x {block_k} inputs (group {group}); "
                     "use a config with more rows (block_n)")


@gluon.jit
def int4_loads(scales_ptr, mins_ptr, q_ptrs, x_ptr, sm_at, k_x, row_ok, groups, row_groups, K, stride_xk):
    """(scales, mins, words, x fp32) of one K block; zero past the row's groups and past K (x: pass K = 0 for
    none)."""
    ok = gl.expand_dims(row_ok, 1) & gl.expand_dims(groups < row_groups, 0)
    s = gl.load(scales_ptr + sm_at, mask=ok, other=0.0).to(gl.float32)
    m = gl.load(mins_ptr + sm_at, mask=ok, other=0.0).to(gl.float32)
    words = gl.load(q_ptrs, mask=gl.expand_dims(ok, 2), other=0)
    x = gl.load(x_ptr + k_x * stride_xk, mask=k_x < K, other=0.0).to(gl.float32)
    return s, m, words, x


@gluon.jit
def int4_gemv_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk,
                     HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                     SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr, DOT_DTYPE: gl.constexpr,
                     PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr, GROUP: gl.constexpr, R: gl.constexpr,
                     V: gl.constexpr, TN: gl.constexpr, TG: gl.constexpr, WN: gl.constexpr, WG: gl.constexpr):
    """q_ptr: int32 words (N, Kp / 8); the arguments of `decode.int4_decode_kernel` plus the layout."""
    W: gl.constexpr = GROUP // 8
    G: gl.constexpr = BLOCK_K // GROUP
    L: gl.constexpr = gl.BlockedLayout([R, 1, V, 8], [TN, TG, W // V, 1], [WN, WG, 1, 1], [3, 2, 1, 0])
    LW: gl.constexpr = gl.SliceLayout(3, L)
    LS: gl.constexpr = gl.SliceLayout(2, LW)
    LX: gl.constexpr = gl.SliceLayout(0, L)
    one = (N >> 31) | 0x3F800000  # fp32 1.0 held in a register: (nibble & mask) | one is one LOP3
    rows = gl.program_id(0) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LS))
    row_ok = rows < N
    row_groups = gl.cdiv(K, GROUP)
    per_split = gl.cdiv(gl.cdiv(row_groups, G), SPLIT_K)
    first = gl.program_id(1) * per_split
    end = gl.minimum(first + per_split, gl.cdiv(row_groups, G))
    g_s = first * G + gl.arange(0, G, layout=gl.SliceLayout(0, LS))
    w_w = gl.expand_dims(gl.expand_dims(gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(1, LW))), 0), 1)
    g_x = gl.expand_dims(gl.expand_dims(gl.arange(0, G, layout=gl.SliceLayout(1, gl.SliceLayout(2, LX))), 1), 2)
    w_x = gl.expand_dims(gl.expand_dims(gl.arange(0, W, layout=gl.SliceLayout(0, gl.SliceLayout(2, LX))), 0), 2)
    i_x = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, LX))), 0), 1)
    shift = gl.expand_dims(19 - 4 * i_x, 0)  # nibble i (bits 4i..4i+3) to bits 19..22, the mantissa's top
    sm_at = gl.expand_dims(rows.to(gl.int64) * row_groups, 1) + gl.expand_dims(g_s, 0)
    q_ptrs = q_ptr + gl.expand_dims(sm_at, 2) * W + w_w
    k_x = 8 * ((first * G + g_x) * W + w_x) + i_x
    acc = gl.zeros((BLOCK_N, G, W), gl.float32, layout=LW)
    s, m, words, x = int4_loads(scales_ptr, mins_ptr, q_ptrs, x_ptr, sm_at, k_x, row_ok, g_s, row_groups, K,
                                stride_xk)
    for step in range(first, end):
        ahead = (step + 1 - first) * G
        live = step + 1 < end
        s_n, m_n, words_n, x_n = int4_loads(scales_ptr, mins_ptr, q_ptrs + ahead * W, x_ptr, sm_at + ahead,
                                            k_x + ahead * (8 * W), row_ok & live, g_s + ahead, row_groups, gl.where(live, K, 0),
                                            stride_xk)
        w4 = gl.expand_dims(words, 3)
        moved = gl.where(shift >= 0, w4 << gl.maximum(shift, 0), w4 >> gl.maximum(-shift, 0))
        f = ((moved & 0x00780000) | one).to(gl.float32, bitcast=True)
        d = gl.sum(f * gl.expand_dims(x, 0), axis=3)
        xs = gl.convert_layout(gl.sum(x, axis=2), gl.SliceLayout(0, LW))  # the same registers: no data moves
        acc += gl.expand_dims(16 * s, 2) * d + gl.expand_dims(m - 16 * s, 2) * gl.expand_dims(xs, 0)
        s, m, words, x = s_n, m_n, words_n, x_n
    total = gl.sum(gl.sum(acc, axis=2), axis=1)
    if SPLIT_K == 1:
        if HAS_BIAS:
            total += gl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(gl.float32)
        gl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty), mask=row_ok)
    else:
        gl.store(out_ptr + gl.program_id(1) * N + rows, total, mask=row_ok)


KERNELS = {"int4": int4_gemv_kernel}


def launch_constexprs(layout: str, block_n: int, block_k: int, group: int, num_warps: int) -> dict:
    """The layout constexprs and num_warps of `layout`'s kernel for a (block_n x block_k) block."""
    return dataclasses.asdict(int4_layout(block_n, block_k, group, num_warps))

