"""Weight bytes asked into L2 a few K steps ahead of the loads that read them.

The tensor-core kernels hold their next step's operands in registers, so a program's loads have one step of
work to arrive in. `cp.async.bulk.prefetch.L2` asks for a span of bytes and holds no register: a program can
have the bytes of steps further ahead in flight, and its register loads then find them in L2. It pays where
a program's bytes of a step are one span (`hybrid_mma`: a tile is stored whole) and the step is short (1 to 16
x rows); elsewhere it cost more than it gained (RESULTS.md), so the tuner decides per shape.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl


@gluon.jit
def ask_l2_span(ptr, nbytes, ask):
    """Where `ask` (an int32 scalar), thread 0 asks L2 for nbytes (a multiple of 16) from ptr (16-byte aligned),
    one bulk prefetch; nothing waits for it."""
    gl.inline_asm_elementwise(
        "{ .reg .pred p, q; .reg .b32 t; mov.u32 t, %tid.x; setp.eq.u32 p, t, 0; setp.ne.u32 q, $3, 0; "
        "and.pred p, p, q; @p cp.async.bulk.prefetch.L2.global [$1], $2; } // $0",
        "=r,l,r,r", [ptr, nbytes, ask], dtype=gl.int32, is_pure=False, pack=1)
