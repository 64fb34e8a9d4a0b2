"""Which kernel runs a product, with which launch configuration: the defaults and the candidates tuned over.

`kernel_for` picks the kernel from the layout and M: `decode` at M == 1 (int4, nv24, nv24_int4, bsr_int4, hybrid
grids of DENSE / NV24 / ZERO tiles), `mma` on the GPU for INT4 at M = 2 to 16, BSR_INT4 at M = 2 to 128 (`int4_mma`)
and for NV24, NV24_INT4 (`nv24_mma`) and such HYBRID grids of 128-input tiles (`hybrid_mma`; the last tile
column may be narrower) at M = 2 to 128 (from M = 1 the HYBRID grids that mix DENSE and NV24 tiles, and all
three in fp16, which `decode` runs slower or not; up to 256 the grids, NV24 and NV24_INT4 weights
`hybrid_wgmma` takes, whose configs are then candidates too, as are `sparse_wgmma`'s from 8 rows; untuned past
128 rows, the rebuild), `wgmma` on Hopper for INT4 at M = 17 to 256 (`int4_wgmma` or, by config,
`int4_wgmma_ws`), else the tile kernels (`bsr_int4.bsr_int4_kernel`, `hybrid.tile_grid_kernel`).
A config may name `rebuild` (the weight rebuilt once, then cuBLAS): the tile kernels' default from M = 256, and
from M = 65 a candidate of every kernel's tuner (`runner` runs it in the kernel's place).
`config_for` returns the config the per-GPU table of `autotune` holds for (kernel, layout, N, K, M bucket; for
HYBRID's decode and mma kernels the layout with its tile mix, `tuned_layout`), else that of the nearest tuned
shape (`autotune.nearest_key`), else the kernel's default; with SPARC_AUTOTUNE=1 it times `candidates` on the
call's inputs first, each checked against the rebuilt weight's product (`matches_reference`).
"""
from __future__ import annotations

import itertools

import torch

from . import (autotune, bsr_int4, decode, hybrid, hybrid_mma, hybrid_wgmma, int4_mma, int4_wgmma, nv24_mma,
               rebuild, sparse_wgmma)

# the tensor-core kernel of each layout at small M
MMA = {"int4": int4_mma, "bsr_int4": int4_mma, "nv24": nv24_mma, "nv24_int4": nv24_mma, "hybrid": hybrid_mma}
REBUILD_CANDIDATE_M = 64  # past it every kernel's tuner weighs the rebuild


def kernel_for(layout: str, x2d: torch.Tensor, tensors=None):
    """(kernel name, matmul function) for this product (`tensors`: the packed weight's, for HYBRID)."""
    m = x2d.shape[0]
    if layout in MMA and MMA[layout].supports(layout, x2d, tensors):  # one row only where decode is slower or can't
        return "mma", MMA[layout].matmul
    if decode.supports(layout, m, x2d.dtype, tensors):
        return "decode", decode.matmul
    if int4_wgmma.supports(layout, x2d, tensors):
        return "wgmma", int4_wgmma.matmul
    return "tile", (bsr_int4.matmul if layout == "bsr_int4" else hybrid.matmul)


def default(kernel: str, layout: str, m: int):
    if kernel == "decode":
        return decode.DEFAULTS[layout]
    if kernel == "mma":
        return MMA[layout].default(layout, m)
    if kernel == "wgmma":
        return int4_wgmma.default(layout, m)
    if m >= rebuild.REBUILD_MIN_M and rebuild.supports(layout):
        return rebuild.CONFIG
    return hybrid.default_config(m)


def candidates(kernel: str, layout: str, m: int, more=()) -> list:
    """The configs SPARC_AUTOTUNE=1 times for this kernel, layout and M (`more`: the mma kernel's also, such as
    `hybrid_wgmma`'s and `sparse_wgmma`'s where they take the weight)."""
    if kernel == "decode":
        if layout == "bsr_int4":
            return [decode.Config(b, 0, s, w, 1) for b, s, w in itertools.product((2, 4, 8, 16), (1, 2, 4), (4, 8))]
        if layout == "hybrid":
            return [decode.Config(n, 0, s, w, 1) for n, s, w in
                    itertools.product((8, 16, 32, 64, 128), (0, 1, 2, 4), (4, 8))]
        # int4, nv24, nv24_int4: `gluon_decode`'s explicit layouts on the GPU, no software pipelining to choose
        return [decode.Config(n, k, s, w) for n, k, s, w in
                itertools.product((4, 8, 16, 32), (512, 1024, 2048), (1, 2), (4, 8))]
    if kernel == "mma":
        return MMA[layout].candidates(layout, m) + list(more) + rebuild_candidates(layout, m)
    if kernel == "wgmma":
        return int4_wgmma.candidates(layout, m) + rebuild_candidates(layout, m)
    if m == 1:  # the FMA path (BLOCK_M = 1) or one 16-row tensor-core tile
        return [hybrid.Config(1, n, 128, split, w, st) for n, split, w, st in
                itertools.product((16, 32, 64), (0, 1), (4, 8), (2, 3))] + [hybrid.Config(16, 64, 128, 0, 4, 3, True)]
    if m <= 64:
        block_m = max(16, min(64, 1 << (m - 1).bit_length()))
        return [hybrid.Config(block_m, n, k, 0, w, st, swap) for n, k, w, st, swap in
                [(64, 128, 4, 3, False), (64, 128, 4, 3, True), (128, 128, 8, 3, False), (128, 128, 8, 3, True),
                 (128, 64, 4, 4, True), (64, 64, 4, 4, False), (128, 128, 4, 2, True)]]
    large = [hybrid.Config(bm, bn, bk, 1, w, st, swap) for bm, bn, bk, w, st, swap in
             [(128, 128, 64, 8, 3, False), (128, 128, 64, 8, 3, True), (128, 256, 64, 8, 3, False),
              (128, 128, 128, 8, 3, False), (64, 128, 64, 4, 4, False), (128, 128, 64, 4, 4, True),
              (64, 256, 64, 8, 3, True), (128, 256, 64, 8, 4, True)]]
    large += rebuild_candidates(layout, m)
    if m > 256:
        return large
    # M = 256 fills few programs with large tiles: smaller tiles and split-K too
    return large + [hybrid.Config(bm, bn, 64, 0, w, st, swap) for bm, bn, w, st, swap in
                    [(64, 64, 4, 4, False), (64, 128, 4, 4, False), (128, 64, 4, 4, True), (128, 128, 8, 3, True),
                     (64, 64, 4, 4, True)]]


def rebuild_candidates(layout: str, m: int) -> list:
    """The rebuild, which the tensor-core kernels' tuners also weigh past 64 x rows (where cuBLAS may beat them
    on an odd shape)."""
    return [rebuild.CONFIG] if m > REBUILD_CANDIDATE_M and rebuild.supports(layout) else []


def runner(run, config):
    """`run`, the kernel's matmul, or the rebuild where `config` names it (the tile kernels also take it)."""
    return run_rebuilt if getattr(config, "rebuild", False) else run


def run_rebuilt(x2d: torch.Tensor, layout: str, tensors, dims, bias, config, split_k=None, out=None, partials=None):
    return rebuild.matmul(x2d, layout, tensors, dims, bias, out=out)


TUNING_BYTES = 200 * 2**20  # weight bytes each timed run streams: 4x the H100's L2, so none comes from L2
# a tuned config's output may be off the float64 product by this much of |x| @ |W|.T + |bias| (fp32: TF32 products,
# where the user allows them, stay within it)
TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def kernel_matmul(kernel: str, layout: str):
    return {"decode": decode.matmul, "mma": MMA.get(layout, int4_mma).matmul, "wgmma": int4_wgmma.matmul}.get(
        kernel, bsr_int4.matmul if layout == "bsr_int4" else hybrid.matmul)


def timed_run(kernel: str, layout: str, x2d: torch.Tensor, tensors, dims, bias):
    """run(config): the product over enough copies of the weight to stream TUNING_BYTES (the first is the
    caller's), so tuning times device memory, not L2; made only when a key is tuned."""
    matmul = kernel_matmul(kernel, layout)
    copies = [tensors]

    def run(config):
        if len(copies) == 1:
            size = max(1, sum(t.numel() * t.element_size() for t in tensors))
            copies.extend([t.clone() for t in tensors] for _ in range(min(63, TUNING_BYTES // size)))
        for weights in copies:
            runner(matmul, config)(x2d, layout, weights, dims, bias, config)
    return run


def matches_reference(kernel: str, layout: str, x2d: torch.Tensor, tensors, dims, bias):
    """check(config): whether the config's output on the call's inputs is x @ W.T + bias of the rebuilt weight in
    float64, within TOLERANCE of |x| @ |W|.T + |bias|; the reference is made at the first check."""
    matmul = kernel_matmul(kernel, layout)
    reference = []

    def check(config):
        if not reference:
            weight = rebuild.rebuild(layout, tensors, dims, x2d.dtype, x2d.device).double()
            x = x2d.double()
            offset = 0 if bias is None else bias.double()
            reference.extend([x @ weight.T + offset, x.abs() @ weight.abs().T + abs(offset)])
        expected, scale = reference
        error = (runner(matmul, config)(x2d, layout, tensors, dims, bias, config).double() - expected).abs()
        return bool((error <= TOLERANCE[x2d.dtype] * scale + 1e-6).all())  # NaN fails too
    return check


def tuned_layout(kernel: str, layout: str, tensors, dims) -> str:
    """The layout as the table keys it. HYBRID's decode and mma kernels stream a DENSE tile row in twice the
    bytes of an NV24 one, so their best config follows the mix: keyed by the DENSE share of the tiles, to the
    nearest tenth ("hybrid-dense30"), read from the buffers' sizes (no sync); "hybrid-dense100" only where no
    tile is NV24 (such grids may run `hybrid_wgmma`)."""
    if kernel not in ("decode", "mma") or layout != "hybrid":
        return layout
    grid, dense, values, tile = tensors[0], tensors[2], tensors[3], dims[3]
    tenths = round(10 * dense.numel() / max(1, grid.numel() * tile * tile))
    return f"hybrid-dense{min(tenths, 9 if values.numel() else 10) * 10}"


def product_candidates(kernel: str, layout: str, x2d: torch.Tensor, tensors) -> list:
    """The configs SPARC_AUTOTUNE=1 times for this product besides the default: the mma kernel's with those of
    `hybrid_wgmma` and `sparse_wgmma` where they take the product."""
    more = (hybrid_wgmma.candidates_for(layout, x2d, tensors) + sparse_wgmma.candidates_for(layout, x2d, tensors)
            if kernel == "mma" else [])
    return candidates(kernel, layout, x2d.shape[0], more)


def config_for(kernel: str, layout: str, x2d: torch.Tensor, tensors, dims, bias):
    """The tuned (or default) config for this product; tunes first under SPARC_AUTOTUNE=1 (the timed run's
    time covers every copy: only the ranking matters)."""
    n, k, m = dims[0], dims[1], x2d.shape[0]
    key = autotune.config_key(kernel, tuned_layout(kernel, layout, tensors, dims), n, k, m)
    return autotune.select(key, default(kernel, layout, m), product_candidates(kernel, layout, x2d, tensors),
                           timed_run(kernel, layout, x2d, tensors, dims, bias), x2d.device,
                           check=matches_reference(kernel, layout, x2d, tensors, dims, bias))
