"""Weight formats: pack, unpack and matmul for each layout, dispatched by name.

Each format lives in its own file with a pure-PyTorch reference (the ground truth, used on the CPU) and the Triton
piece that rebuilds its weight blocks; `hybrid.tile_grid_kernel` runs the tile formats (dense, nv24, int4,
nv24_int4, zero and their hybrid grid), `bsr_int4.bsr_int4_kernel` the block-sparse one, and at M == 1 int4, nv24,
nv24_int4, bsr_int4 and DENSE / NV24 / ZERO hybrid grids run weight-streaming kernels (`decode`; on the GPU their
explicit-layout versions, `gluon_decode`); on the GPU INT4 at M = 2 to 16 and BSR_INT4 at M = 2 to 128 run
`int4_mma`, at M = 2 to 128 NV24 and NV24_INT4 `nv24_mma` (sparse tensor cores), HYBRID grids of DENSE / NV24 / ZERO
128-tiles `hybrid_mma` (from M = 1 where DENSE and NV24 tiles mix; all three from M = 1 in fp16, where the decode
kernels are slower or absent; on Hopper, by config, such grids and NV24 weights with K a multiple of 128
`hybrid_wgmma` up to M = 256, NV24 tiles expanded by producer warps in `hybrid_wgmma_ws`; from M = 8 NV24 and
NV24_INT4 weights and grids with NV24 tiles also on the sparse warpgroup mma, `sparse_wgmma`),
and on Hopper at M = 17 to 256 INT4 `int4_wgmma` (warpgroup mma; or its warp-specialized variant
`int4_wgmma_ws`, where the tuned config says).
For large M a tuned choice (the default from M = 256) rebuilds the weight once in the activation dtype and
multiplies by cuBLAS instead (`rebuild`); `kernel_name` says which runs.
`tuning` picks the kernel and its launch configuration (the per-GPU table of `autotune`). On Hopper the Gluon
kernels and the split-K reduction launch dependently (`pdl`): each may start while the kernel before it finishes.
A `PackedWeight` is what a planned linear holds at run time: the format name, the logical
(out_features, in_features) shape, the quantization group, the tensors the format stores and the format's
extra dims (hybrid: the tile size; bsr_int4: block_n).
"""
from __future__ import annotations

import dataclasses

import torch

from . import autotune, bsr_int4, decode, dense, hybrid, int4, nv24, nv24_int4, rebuild, tuning, zero

FORMATS = {"dense": dense, "nv24": nv24, "int4": int4, "nv24_int4": nv24_int4, "zero": zero,
           "bsr_int4": bsr_int4, "hybrid": hybrid}


@dataclasses.dataclass(frozen=True, eq=False)
class PackedWeight:
    layout: str
    shape: tuple[int, int]
    group: int
    tensors: tuple[torch.Tensor, ...]
    extra: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    @property
    def dims(self) -> list[int]:
        return [self.shape[0], self.shape[1], self.group, *self.extra]

    def to(self, device) -> PackedWeight:
        return dataclasses.replace(self, tensors=tuple(t.to(device) for t in self.tensors))


def pack(layout: str, weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int = 0, *,
         block_n: int = 16, formats=None, tile: int = 128, scales=None, mins=None) -> PackedWeight:
    """Pack `weight * mask` ((N, K), logical layout) into `layout`, values in `dtype`.

    bsr_int4 takes `block_n`; hybrid takes `formats` (uint8 (ceil(N / tile), ceil(K / tile)) of TileFormat)
    and `tile`; int4 and bsr_int4 take the planner's `scales` and `mins` (N, ceil(K / group)) if it chose them."""
    weight, mask = weight.float(), mask.bool()
    if scales is not None and layout not in ("int4", "bsr_int4"):
        raise ValueError(f"layout '{layout}' cannot take planner-chosen int4 scales")
    if layout == "bsr_int4":
        tensors, extra = bsr_int4.pack(weight, mask, dtype, group, block_n, scales, mins), (block_n,)
    elif layout == "int4":
        tensors, extra = int4.pack(weight, mask, dtype, group, scales, mins), ()
    elif layout == "hybrid":
        tensors, extra = hybrid.pack(weight, mask, dtype, group, formats, tile), (tile,)
    else:
        tensors, extra = FORMATS[layout].pack(weight, mask, dtype, group), ()
    return PackedWeight(layout, (weight.shape[0], weight.shape[1]), group, tuple(tensors), extra)


def unpack(packed: PackedWeight) -> torch.Tensor:
    return FORMATS[packed.layout].unpack(packed.tensors, packed.shape, packed.group, *packed.extra)


def reference_matmul(x: torch.Tensor, layout: str, tensors, dims, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., K) @ W.T + bias with W the unpacked weight: the reference every kernel is checked against."""
    n, k, group, *extra = dims
    if layout == "zero":
        return zero.matmul(x, n, bias)
    weight = FORMATS[layout].unpack(tensors, (n, k), group, *extra).to(x.dtype)
    return torch.nn.functional.linear(x, weight, bias)


def triton_matmul(x: torch.Tensor, layout: str, tensors, dims, bias: torch.Tensor | None, *, split_k=None,
                  out=None, partials=None, config=None) -> torch.Tensor:
    """x (..., K) @ W.T + bias through the format's Triton kernel (on the CPU: under TRITON_INTERPRET=1).

    `split_k` overrides the split-K choice; `out` (M, N) and `partials` (split_k, M, N) fp32 are buffers owned
    by the caller; `config` overrides the tuned launch configuration (of the kernel `tuning.kernel_for` names)."""
    n, k = dims[0], dims[1]
    x2d = x.reshape(-1, k)
    if x2d.shape[0] == 0:
        return x.new_empty(*x.shape[:-1], n)
    kernel, run = tuning.kernel_for(layout, x2d, tensors)
    if config is None:
        config = tuning.config_for(kernel, layout, x2d, list(tensors), dims, bias)
    run = tuning.runner(run, config)
    out = run(x2d, layout, list(tensors), dims, bias, config, split_k=split_k, out=out, partials=partials)
    return out.reshape(*x.shape[:-1], n)


def kernel_name(x: torch.Tensor, layout: str, tensors, dims) -> str:
    """Which kernel `triton_matmul` runs for x (..., K) and this weight: decode, mma, wgmma, tile or rebuild."""
    x2d = x.reshape(-1, dims[1])
    kernel, _ = tuning.kernel_for(layout, x2d, tensors)
    config = tuning.config_for(kernel, layout, x2d, list(tensors), dims, None)
    return "rebuild" if getattr(config, "rebuild", False) else kernel


def matmul(x: torch.Tensor, layout: str, tensors, dims, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., K) @ W.T + bias: the Triton kernel on CUDA tensors, the reference elsewhere."""
    if x.is_cuda:
        return triton_matmul(x, layout, tensors, dims, bias)
    return reference_matmul(x, layout, tensors, dims, bias)
