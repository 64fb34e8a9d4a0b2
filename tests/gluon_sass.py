"""Compile a `gluon_decode` kernel for sm_90 on any machine and print its K loop's instruction counts as JSON:
python tests/gluon_sass.py LAYOUT BLOCK_N BLOCK_K GROUP NUM_WARPS (run without TRITON_INTERPRET);
`int4_mma`'s kernels with python tests/gluon_sass.py mma|mma_bsr BLOCK_N BLOCK_K GROUP NUM_WARPS BLOCK_M;
`nv24_mma`'s with python tests/gluon_sass.py mma_nv24 BLOCK_N NUM_WARPS BLOCK_M [GROUP (NV24_INT4) [WARPS_M
[MAX_REGISTERS [META_BYTES]]]],
`hybrid_mma`'s with python tests/gluon_sass.py mma_hybrid BLOCK_N NUM_WARPS BLOCK_M HAS_DENSE HAS_NV24 [WARPS_M
[EDGE [PREFETCH]]],
`int4_wgmma`'s with python tests/gluon_sass.py wgmma BLOCK_M BLOCK_N NUM_WARPS GROUP [MAX_REGISTERS],
`int4_wgmma_ws`'s with python tests/gluon_sass.py wgmma_ws BLOCK_M BLOCK_N NUM_WARPS GROUP STAGES PRODUCERS,
`hybrid_wgmma`'s with python tests/gluon_sass.py wgmma_hybrid BLOCK_M BLOCK_N NUM_WARPS HAS_ZERO,
`hybrid_wgmma_ws`'s with python tests/gluon_sass.py wgmma_hybrid_ws BLOCK_M BLOCK_N NUM_WARPS [PLAIN (an NV24
weight) [GROUP (an NV24_INT4 one)]],
`sparse_wgmma`'s with python tests/gluon_sass.py wgmma_sparse BLOCK_M BLOCK_N STAGES [LAYOUT (0 an NV24 weight,
1 an NV24_INT4 one, 2 a HYBRID grid) [GROUP]].
With --shared-offsets first it prints the constant offsets the kernel adds to the base of its shared memory,
with --pdl first where the kernel waits for the kernel before it and releases the next one instead,
with --loops the counts of every loop, the smallest first, with --metadata-in-flight the instructions of the sparse
wgmma's loop that write a register an unfinished wgmma.sp reads as its metadata.

Specialized as the launcher specializes a Llama layer: aligned pointers, N and K multiples of 16, x contiguous."""
import collections
import json
import re
import sys

import torch
from triton.backends.compiler import GPUTarget
from triton.compiler import compile as triton_compile
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import mangle_type
from triton.tools.disasm import get_sass

from sparc.kernels import (decode, gluon_decode, hybrid_mma, hybrid_wgmma, hybrid_wgmma_ws, int4_mma, int4_wgmma,
                           int4_wgmma_ws, nv24_mma, sparse_wgmma)


POINTERS = {"int4": dict(q_ptr="*i32", scales_ptr="*bf16", mins_ptr="*bf16"),
            "nv24": dict(values_ptr="*i32", meta_ptr="*u8"),
            "nv24_int4": dict(q_ptr="*i32", scales_ptr="*bf16", mins_ptr="*bf16", meta_ptr="*i16"),
            "bsr_int4": dict(row_ptr="*i32", col_ptr="*i16", q_ptr="*i32", scales_ptr="*bf16", mins_ptr="*bf16"),
            "hybrid": dict(formats_ptr="*u8", offsets_ptr="*i64", dense_ptr="*bf16", values_ptr="*i32",
                           meta_ptr="*u8")}


def compile_decode(layout: str, block_n: int, block_k: int, group: int, num_warps: int):
    constexprs = dict(HAS_BIAS=True, BLOCK_M=1, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=1, USE_DOT=False,
                      DOT_DTYPE="bf16", PRECISION="ieee", ROUND_BF16=False, PDL=True, stride_xk=1)
    if layout in ("int4", "nv24_int4"):
        constexprs["GROUP"] = group
    if layout == "hybrid":
        constexprs.update(HAS_DENSE=True, HAS_NV24=True, ALIGNED=True)
    dims, config = (4096, 4096, group), decode.Config(block_n, block_k, 1, num_warps)
    if layout == "bsr_int4":  # block_n blocks a step of 16 x group blocks
        dims, block_n, block_k = (*dims, 16), 16, group
        constexprs.update(BLOCK_N=16, BLOCK_K=group, BLOCK_B=config.block_n)
    kernel, _, chosen = gluon_decode.explicit_kernel(layout, block_n, block_k, dims, config, torch.bfloat16)
    warps = chosen.pop("num_warps")
    constexprs.update(chosen)
    pointers = dict(x_ptr="*bf16", out_ptr="*bf16", bias_ptr="*bf16", **POINTERS[layout])
    signature = dict(pointers, M="i32", N="i32", K="i32", stride_xm="i32")
    if layout == "nv24":
        signature["row_bytes"] = "i32"
    if layout == "nv24_int4":
        signature["pairs_k"] = "i32"
    if layout == "hybrid":
        signature["grid_cols"] = "i32"
    signature.update({name: "constexpr" for name in constexprs})
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in [*pointers, "N", "K"]
               + (["row_bytes"] if layout == "nv24" else []) + (["pairs_k"] if layout == "nv24_int4" else [])}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))


def compile_int4_mma(block_n: int, block_k: int, group: int, num_warps: int, block_m: int, layout: str = "int4"):
    lw, lx, mma = int4_mma.operand_layouts(block_n, block_k, block_m, group, num_warps)
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=1, USE_DOT=True,
                      DOT_DTYPE="bf16", PRECISION="tf32", ROUND_BF16=False, PDL=True, stride_xk=1, GROUP=group, LW=lw,
                      LX=lx, MMA=mma)
    pointers = dict(x_ptr="*bf16", out_ptr="*bf16", bias_ptr="*bf16")
    if layout == "bsr_int4":
        pointers.update(row_ptr="*i32", col_ptr="*i16")
    pointers.update(q_ptr="*i32", scales_ptr="*i16", mins_ptr="*i16")
    signature = dict(pointers, M="i32", N="i32", K="i32", stride_xm="i32", pairs_k="i32",
                     **{name: "constexpr" for name in constexprs})
    kernel = int4_mma.bsr_int4_mma_kernel if layout == "bsr_int4" else int4_mma.int4_mma_kernel
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]]
               for name in [*pointers, "N", "K", "stride_xm", "pairs_k"]}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))


def compile_nv24_mma(block_n: int, num_warps: int, block_m: int, group: int = 0, warps_m: int = 1,
                     max_registers: int = 0, meta_bytes: int = 0):
    lv, lm, ld, mma = nv24_mma.operand_layouts(block_n, block_m, num_warps, quantized=group > 0, warps_m=warps_m)
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=nv24_mma.BLOCK_K, SPLIT_K=1,
                      USE_DOT=True, DOT_DTYPE="bf16", PRECISION="tf32", ROUND_BF16=False, PDL=True, stride_xk=1,
                      GROUP=group, META_BYTES=bool(meta_bytes), LV=lv, LM=lm, LG=nv24_mma.x_layout(block_m, num_warps),
                      LS=nv24_mma.step_layout(block_m, num_warps, warps_m), LD=ld, MMA=mma)
    pointers = dict(x_ptr="*bf16", out_ptr="*bf16", bias_ptr="*bf16", values_ptr="*i32", scales_ptr="*i16",
                    mins_ptr="*i16", meta_ptr="*i32")
    signature = dict(pointers, M="i32", N="i32", K="i32", stride_xm="i32", pairs_k="i32", row_values="i32",
                     row_words="i32", row_groups="i32", **{name: "constexpr" for name in constexprs})
    kernel = nv24_mma.nv24_mma_kernel
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]]
               for name in [*pointers, "N", "K", "stride_xm", "pairs_k", "row_values", "row_words", "row_groups"]}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    cap = {"maxnreg": max_registers} if max_registers else {}
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, **cap))


def compile_hybrid_mma(block_n: int, num_warps: int, block_m: int, has_dense: int, has_nv24: int, warps_m: int = 1,
                       edge: int = 0, prefetch: int = 0):
    lv, lm, ld, mma = nv24_mma.operand_layouts(block_n, block_m, num_warps, warps_m=warps_m)
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=hybrid_mma.TILE, SPLIT_K=1,
                      USE_DOT=True, DOT_DTYPE="bf16", PRECISION="tf32", ROUND_BF16=False, PDL=True, stride_xk=1,
                      HAS_DENSE=bool(has_dense), HAS_NV24=bool(has_nv24), EDGE=bool(edge), LV=lv, LM=lm,
                      LVD=hybrid_mma.dense_layout(block_n, num_warps, warps_m),
                      LG=nv24_mma.x_layout(block_m, num_warps),
                      LGD=nv24_mma.x_layout(block_m, num_warps, **hybrid_mma.DENSE_X_BITS),
                      LS=nv24_mma.step_layout(block_m, num_warps, warps_m), LD=ld, MMA=mma, PREFETCH=prefetch)
    pointers = dict(x_ptr="*bf16", out_ptr="*bf16", bias_ptr="*bf16", formats_ptr="*u8", offsets_ptr="*i64",
                    dense_ptr="*i32", values_ptr="*i32", meta_ptr="*i32")
    signature = dict(pointers, M="i32", N="i32", K="i32", stride_xm="i32", pairs_k="i32", grid_cols="i32",
                     **{name: "constexpr" for name in constexprs})
    kernel = hybrid_mma.hybrid_mma_kernel
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]]
               for name in [*pointers, "N", "K", "stride_xm", "pairs_k"]}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))


def compile_int4_wgmma(block_m: int, block_n: int, num_warps: int, group: int, max_registers: int = 0):
    lw, lx, mma, shared = int4_wgmma.layouts(block_m, block_n, group, num_warps)
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=int4_wgmma.BLOCK_K, SPLIT_K=1,
                      USE_DOT=True, DOT_DTYPE="bf16", PRECISION="tf32", ROUND_BF16=False, PDL=True, stride_xk=1,
                      GROUP=group, LW=lw, LX=lx, MMA=mma, XS=shared)
    pointers = dict(x_ptr="*bf16", out_ptr="*bf16", bias_ptr="*bf16", q_ptr="*i32", scales_ptr="*i16",
                    mins_ptr="*i16")
    signature = dict(pointers, M="i32", N="i32", K="i32", stride_xm="i32",
                     **{name: "constexpr" for name in constexprs})
    kernel = int4_wgmma.int4_wgmma_kernel
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]]
               for name in [*pointers, "N", "K", "stride_xm"]}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    cap = {"maxnreg": max_registers} if max_registers else {}
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, **cap))


def compile_int4_wgmma_ws(block_m: int, block_n: int, num_warps: int, group: int, stages: int, producers: int):
    lw, mma, shared = int4_wgmma_ws.layouts(block_m, block_n, group, num_warps, producers)
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=int4_wgmma_ws.BLOCK_K, SPLIT_K=1,
                      USE_DOT=True, DOT_DTYPE="bf16", PRECISION="tf32", ROUND_BF16=False, PDL=True, stride_xk=1,
                      GROUP=group, STAGES=stages, X_STAGES=int4_wgmma_ws.x_stages(block_m, block_n, stages),
                      PRODUCERS=producers,
                      PRODUCER_REGISTERS=int4_wgmma_ws.PRODUCER_REGISTERS[producers], LW=lw, MMA=mma, WS=shared)
    x_desc = TensorDescriptor.from_tensor(torch.empty(block_m, 4096, dtype=torch.bfloat16),
                                          [block_m, int4_wgmma_ws.BLOCK_K // 2], shared)
    pointers = dict(out_ptr="*bf16", bias_ptr="*bf16", q_ptr="*i32", scales_ptr="*i16", mins_ptr="*i16")
    signature = dict(x_desc=mangle_type(x_desc), **pointers, M="i32", N="i32", K="i32", stride_xm="i32",
                     **{name: "constexpr" for name in constexprs})
    kernel = int4_wgmma_ws.int4_wgmma_ws_kernel
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in [*pointers, "N", "K"]}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    cap = int4_wgmma_ws.registers_at_launch(num_warps + producers)
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, maxnreg=cap))


def compile_hybrid_wgmma(block_m: int, block_n: int, num_warps: int, has_zero: int):
    mma, shared = hybrid_wgmma.layouts(block_m, num_warps)
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=hybrid_wgmma.TILE, SPLIT_K=1,
                      USE_DOT=True, DOT_DTYPE="bf16", PRECISION="tf32", ROUND_BF16=False, PDL=True, stride_xk=1,
                      HAS_ZERO=bool(has_zero), STAGES=hybrid_wgmma.stages_for(block_m, block_n), MMA=mma)
    x_desc = TensorDescriptor.from_tensor(torch.empty(block_m, 4096, dtype=torch.bfloat16),
                                          [block_m, hybrid_wgmma.HALF], shared)
    w_desc = hybrid_wgmma.w_descriptor(torch.empty(4096 * 32, 128, dtype=torch.bfloat16), block_n, shared)
    pointers = dict(out_ptr="*bf16", bias_ptr="*bf16", formats_ptr="*u8", offsets_ptr="*i64")
    signature = dict(x_desc=mangle_type(x_desc), **pointers, w_desc=mangle_type(w_desc), M="i32", N="i32",
                     K="i32", stride_xm="i32", grid_cols="i32", **{name: "constexpr" for name in constexprs})
    kernel = hybrid_wgmma.hybrid_wgmma_kernel
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in [*pointers, "N", "K"]}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))


def compile_hybrid_wgmma_ws(block_m: int, block_n: int, num_warps: int, plain: int = 0, group: int = 0):
    mma, shared = hybrid_wgmma.layouts(block_m, num_warps)
    lv, lm = hybrid_wgmma_ws.producer_layouts(quantized=group > 0)
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=hybrid_wgmma.TILE, SPLIT_K=1,
                      USE_DOT=True, DOT_DTYPE="bf16", PRECISION="tf32", ROUND_BF16=False, PDL=True, stride_xk=1,
                      STAGES=hybrid_wgmma.stages_for(block_m, block_n, nv24=True),
                      PRODUCERS=hybrid_wgmma_ws.PRODUCERS, PRODUCER_REGISTERS=hybrid_wgmma_ws.PRODUCER_REGISTERS,
                      LV=lv, LM=lm, MMA=mma, PLAIN=bool(plain or group), GROUP=group)
    x_desc = TensorDescriptor.from_tensor(torch.empty(block_m, 4096, dtype=torch.bfloat16),
                                          [block_m, hybrid_wgmma.HALF], shared)
    w_desc = hybrid_wgmma.w_descriptor(torch.empty(4096 * 32, 128, dtype=torch.bfloat16), block_n, shared)
    values, meta = torch.empty(4096, 2048, dtype=torch.bfloat16), torch.empty(4096, 512, dtype=torch.uint8)
    if group:
        values = torch.empty(4096, 1024, dtype=torch.uint8)
    elif not plain:
        values, meta = values.view(-1, 64), meta.view(-1, 16)
    v_desc, m_desc = hybrid_wgmma_ws.staging_descriptors(values, meta, block_n)
    pointers = dict(out_ptr="*bf16", bias_ptr="*bf16", formats_ptr="*u8", offsets_ptr="*i64", scales_ptr="*i16",
                    mins_ptr="*i16")
    signature = dict(x_desc=mangle_type(x_desc), **pointers, w_desc=mangle_type(w_desc),
                     v_desc=mangle_type(v_desc), m_desc=mangle_type(m_desc), M="i32", N="i32", K="i32",
                     stride_xm="i32", grid_cols="i32", row_groups="i32", **{name: "constexpr" for name in constexprs})
    kernel = hybrid_wgmma_ws.hybrid_wgmma_ws_kernel
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in [*pointers, "N", "K"]}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    cap = int4_wgmma_ws.registers_at_launch(num_warps + hybrid_wgmma_ws.PRODUCERS)
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, maxnreg=cap))


def compile_sparse_wgmma(block_m: int, block_n: int, stages: int, layout: int = 0, group: int = 128):
    """`layout`: 0 an NV24 weight, 1 an NV24_INT4 one (of `group`), 2 a HYBRID grid."""
    layout = sparse_wgmma.LAYOUTS[layout]
    mma, shared, plain_bytes = sparse_wgmma.layouts(block_m, block_n)
    asm, constraints = sparse_wgmma.sparse_wgmma_asm(block_m, "bf16")
    num_warps = block_n // 16
    w_at, x_at = sparse_wgmma.ring_offsets(block_m, block_n, stages, layout)
    group = group if layout == "nv24_int4" else 0
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=sparse_wgmma.COLUMN, SPLIT_K=1,
                      USE_DOT=True, DOT_DTYPE="bf16", PRECISION="tf32", ROUND_BF16=False, PDL=True, stride_xk=1,
                      STAGES=stages, X_BOXES=sparse_wgmma.x_boxes(block_m, block_n, stages, layout), W_AT=w_at,
                      X_AT=x_at, MMA=mma, ASM=asm, CONSTRAINTS=constraints,
                      PLAIN=layout != "hybrid", GROUP=group, LQ=sparse_wgmma.pairs_layout())
    x_desc = TensorDescriptor.from_tensor(torch.empty(block_m, 4096, dtype=torch.bfloat16), [block_m, 64], shared)
    meta, scales = torch.empty(4096, 512, dtype=torch.uint8), torch.empty(4096, 2048 // max(group, 1),
                                                                          dtype=torch.bfloat16)
    tensors = {"nv24": (torch.empty(4096, 2048, dtype=torch.bfloat16), meta),
               "nv24_int4": (torch.empty(4096, 1024, dtype=torch.uint8), scales, scales, meta),
               "hybrid": (meta, meta, torch.empty(4096 * 32, 128, dtype=torch.bfloat16),
                          torch.empty(4096, 2048, dtype=torch.bfloat16), meta)}[layout]
    _, _, w_desc, v_desc, m_desc, _, _ = sparse_wgmma.descriptors(layout, tensors, block_n, torch.bfloat16, shared,
                                                                  plain_bytes)
    pointers = dict(out_ptr="*bf16", bias_ptr="*bf16", formats_ptr="*u8", offsets_ptr="*i64", scales_ptr="*i16",
                    mins_ptr="*i16")
    signature = dict(x_desc=mangle_type(x_desc), out_ptr="*bf16", bias_ptr="*bf16", formats_ptr="*u8",
                     offsets_ptr="*i64", w_desc=mangle_type(w_desc), v_desc=mangle_type(v_desc),
                     m_desc=mangle_type(m_desc), scales_ptr="*i16", mins_ptr="*i16", M="i32", N="i32", K="i32",
                     stride_xm="i32", grid_cols="i32", row_groups="i32", **{name: "constexpr" for name in constexprs})
    kernel = sparse_wgmma.sparse_wgmma_kernel
    aligned = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in [*pointers, "N", "K"]}
    source = GluonASTSource(kernel, signature, constexprs, aligned)
    cap = int4_wgmma_ws.registers_at_launch(num_warps + 4)
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, maxnreg=cap))


def loop_spans(lines: list[str]) -> list[tuple[int, int]]:
    """First and last line of every backward branch's body (a loop), the shortest first."""
    labels = {line.strip()[:-1]: i for i, line in enumerate(lines) if re.match(r"^\.?L\w+:$", line.strip())}
    spans = sorted((i - labels[m.group(1)], labels[m.group(1)], i) for i, line in enumerate(lines)
                   if (m := re.search(r"BRA (\.?L\w+)", line)) and labels.get(m.group(1), i) < i)
    return [(start, end) for _, start, end in spans]


def loop_span(lines: list[str]) -> tuple[int, int]:
    """First and last line of the longest backward branch's body: the K loop."""
    return loop_spans(lines)[-1]


def opcode(line: str) -> str | None:
    m = re.match(r"^\S+\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", line.strip())
    return m and m.group(1)


def loops(sass: str) -> list[collections.Counter]:
    """Instruction counts of every loop, the smallest first: a warp-specialized kernel has one K loop a
    partition."""
    lines = sass.splitlines()
    return [collections.Counter(op for line in lines[start:end + 1] if (op := opcode(line)))
            for start, end in loop_spans(lines)]


def main_loop(sass: str) -> collections.Counter:
    """Instruction counts (opcode with its modifiers) of the K loop."""
    lines = sass.splitlines()
    start, end = loop_span(lines)
    return collections.Counter(op for line in lines[start:end + 1] if (op := opcode(line)))


def dependent_launch(sass: str) -> dict:
    """Where the kernel waits for the kernels before it (ACQBULK, griddepcontrol.wait) and lets the next one
    launch (PREEXIT, griddepcontrol.launch_dependents), against its K loop and its global loads and stores."""
    lines = sass.splitlines()
    start, end = loop_span(lines)
    ops = [opcode(line) or "" for line in lines]
    waits = [i for i, op in enumerate(ops) if op == "ACQBULK"]
    releases = [i for i, op in enumerate(ops) if op == "PREEXIT"]
    first_wait = waits[0] if waits else len(ops)
    return dict(waits=len(waits), releases=len(releases), wait_before_loop=first_wait < start,
                release_after_loop=bool(releases) and min(releases) > end,
                loads_before_wait=sum(op.startswith("LDG") for op in ops[:first_wait]),
                stores_before_wait=sum(op.startswith(("STG", "RED", "ATOM")) for op in ops[:first_wait]))


def registers_written(line: str) -> set[str]:
    """The registers an instruction writes: its first operand, and the ones after it that a 64- or 128-bit
    access also takes."""
    m = re.match(r"^\S+\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)\s+R(\d+)\b", line.strip())
    if not m or m.group(1).startswith(("ST", "HGMMA", "SYNCS", "RED", "ATOM", "BAR")):
        return set()
    width = 4 if ".128" in m.group(1) else 2 if ".64" in m.group(1) else 1
    return {f"R{int(m.group(2)) + i}" for i in range(width)}


def metadata_in_flight(sass: str) -> list[str]:
    """The instructions of the sparse wgmma's loop (run twice, for the wrap) that write a register a wgmma.sp
    still in flight reads as its metadata: a group stays in flight until a WARPGROUP.DEPBAR leaves fewer
    groups than came after it."""
    lines = sass.splitlines()
    start, end = next(span for span in loop_spans(lines) if any("HGMMA.SP" in line
                                                                for line in lines[span[0]:span[1] + 1]))
    groups, forming, hazards = [], set(), []
    for line in lines[start:end + 1] * 2:
        if (forming | set().union(*groups)) & registers_written(line):
            hazards.append(line.split("\t")[-1].strip())
        if "HGMMA.SP" in line:
            forming.add(re.search(r"HGMMA\S+ \w+, [^,]+, \w+, (R\d+)", line).group(1))
        if "HGMMA" in line and line.rstrip().endswith("gsb0;"):
            groups, forming = groups + [forming], set()
        if m := re.search(r"WARPGROUP.DEPBAR.LE gsb0, (0x\w+)", line):
            groups = groups[len(groups) - int(m.group(1), 16):] if int(m.group(1), 16) else []
    return sorted(set(hazards))


def shared_offsets(llir: str) -> list[int]:
    """The constant offsets the kernel adds to the base of its shared memory, ascending."""
    return sorted({int(at) for at in re.findall(r"@global_smem, i32 (\d+)\)", llir)})


if __name__ == "__main__":
    report = main_loop
    if sys.argv[1] == "--pdl":
        report = dependent_launch
        sys.argv.pop(1)
    elif sys.argv[1] == "--shared-offsets":
        report = shared_offsets
        sys.argv.pop(1)
    elif sys.argv[1] == "--loops":
        report = loops
        sys.argv.pop(1)
    elif sys.argv[1] == "--metadata-in-flight":
        report = metadata_in_flight
        sys.argv.pop(1)
    if sys.argv[1] == "wgmma_sparse":
        compiled = compile_sparse_wgmma(*map(int, sys.argv[2:7]))
    elif sys.argv[1] == "wgmma_hybrid_ws":
        compiled = compile_hybrid_wgmma_ws(*map(int, sys.argv[2:7]))
    elif sys.argv[1] == "wgmma_hybrid":
        compiled = compile_hybrid_wgmma(*map(int, sys.argv[2:6]))
    elif sys.argv[1] == "wgmma_ws":
        compiled = compile_int4_wgmma_ws(*map(int, sys.argv[2:8]))
    elif sys.argv[1] == "wgmma":
        compiled = compile_int4_wgmma(*map(int, sys.argv[2:7]))
    elif sys.argv[1] == "mma_hybrid":
        compiled = compile_hybrid_mma(*map(int, sys.argv[2:10]))
    elif sys.argv[1] == "mma_nv24":
        compiled = compile_nv24_mma(*map(int, sys.argv[2:9]))
    elif sys.argv[1] in ("mma", "mma_bsr"):
        compiled = compile_int4_mma(*map(int, sys.argv[2:7]), "bsr_int4" if sys.argv[1] == "mma_bsr" else "int4")
    else:
        compiled = compile_decode(sys.argv[1], *map(int, sys.argv[2:6]))
    print(json.dumps(report(compiled.asm["llir"] if report is shared_offsets else get_sass(compiled.asm["cubin"]))))
