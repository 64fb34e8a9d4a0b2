"""Weight bytes asked into L2 a few K steps ahead of the loads that read them.

The tensor-core kernels at small M hold their next step's operands in registers: a program's loads have one
step of work to arrive in, and at 16 to 128 x rows that is less than a DRAM latency, so they wait for every
step. A `prefetch.global.L2` asks for a line and holds no register, so a program can have the lines of several
steps ahead in flight; its register loads then find them in L2. Each thread asks for whole lines: one
per weight row and step, from a layout that gives every row of the program to one thread (`row_layout`).
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl


def row_layout(num_warps: int) -> gl.BlockedLayout:
    """A program's weight rows, one a thread."""
    return gl.BlockedLayout(size_per_thread=[1], threads_per_warp=[32], warps_per_cta=[num_warps], order=[0])


@gluon.jit
def ask_l2(ptr, offsets):
    """Ask L2 for the line of each ptr + offsets; nothing waits for it."""
    gl.inline_asm_elementwise("prefetch.global.L2 [$1]; // $0", "=r,l", [ptr + offsets], dtype=gl.int32,
                              is_pure=False, pack=1)


@gluon.jit
def prefetched_rows(pid_n, N, BLOCK_N: gl.constexpr, LP: gl.constexpr):
    """The program's weight rows (int64, in `row_layout`'s LP), past N clamped to the last row: every address
    asked for lies inside the weight."""
    rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=LP)
    return gl.minimum(rows, N - 1).to(gl.int64)


@gluon.jit
def ask_l2_span(ptr, nbytes, ask):
    """Where `ask` (an int32 scalar), thread 0 asks L2 for nbytes (a multiple of 16) from ptr (16-byte aligned),
    one bulk prefetch."""
    gl.inline_asm_elementwise(
        "{ .reg .pred p, q; .reg .b32 t; mov.u32 t, %tid.x; setp.eq.u32 p, t, 0; setp.ne.u32 q, $3, 0; "
        "and.pred p, p, q; @p cp.async.bulk.prefetch.L2.global [$1], $2; } // $0",
        "=r,l,r,r", [ptr, nbytes, ask], dtype=gl.int32, is_pure=False, pack=1)
