"""Programmatic dependent launch (Hopper on): a kernel launched with it may start while the kernel before it in
the stream is still running, so its launch and setup overlap the other's tail.

Two instructions make that safe. `griddepcontrol.wait` blocks until the kernels this one depends on have
finished and their writes are visible. sparc's kernels execute it first, before any global load or store:
whatever the kernel before wrote (x, split-K partials, even a freshly packed weight) is complete, and no buffer
it still reads gets overwritten. `griddepcontrol.launch_dependents` lets the next kernel launch once every
program of this one has executed it or exited: sparc's kernels execute it after their K loop, before the
epilogue. The split-K reduction does not, so that the next layer's programs find whole SMs, not SMs that the
reduction's waiting programs hold. Without a dependent launch both are no-ops.

SPARC_PDL=0 launches every kernel the plain way."""
from __future__ import annotations

import functools
import os

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl


@functools.cache
def supported(device_index: int) -> bool:
    return (os.environ.get("SPARC_PDL", "1") != "0" and torch.version.hip is None
            and torch.cuda.get_device_capability(device_index)[0] >= 9)


def enabled(x: torch.Tensor) -> bool:
    """Whether kernels reading x launch dependently: an NVIDIA device of compute capability 9 or more."""
    return x.is_cuda and supported(x.device.index or 0)


@gluon.jit
def wait_for_inputs(PDL: gl.constexpr):
    if PDL:
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def release_dependents(PDL: gl.constexpr):
    if PDL:
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
