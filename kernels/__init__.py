"""Weight formats: pack, unpack and matmul for each layout, dispatched by name.

Each format lives in its own file with a pure-PyTorch reference (the ground truth, used on the CPU).
A `PackedWeight` is what a planned linear holds at run time: the format name, the logical
(out_features, in_features) shape, the quantization group and the tensors the format stores.
"""
from __future__ import annotations

import dataclasses

import torch

from . import dense, int4, nv24, nv24_int4, zero

FORMATS = {"dense": dense, "nv24": nv24, "int4": int4, "nv24_int4": nv24_int4, "zero": zero}


@dataclasses.dataclass(frozen=True, eq=False)
class PackedWeight:
    layout: str
    shape: tuple[int, int]
    group: int
    tensors: tuple[torch.Tensor, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    @property
    def dims(self) -> list[int]:
        return [self.shape[0], self.shape[1], self.group]

    def to(self, device) -> PackedWeight:
        return dataclasses.replace(self, tensors=tuple(t.to(device) for t in self.tensors))


def pack(layout: str, weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int = 0) -> PackedWeight:
    """Pack `weight * mask` ((N, K), logical layout) into `layout`, values in `dtype`."""
    tensors = FORMATS[layout].pack(weight.float(), mask.bool(), dtype, group)
    return PackedWeight(layout, (weight.shape[0], weight.shape[1]), group, tuple(tensors))


def unpack(packed: PackedWeight) -> torch.Tensor:
    return FORMATS[packed.layout].unpack(packed.tensors, packed.shape, packed.group)


def reference_matmul(x: torch.Tensor, layout: str, tensors, dims, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., K) @ W.T + bias with W the unpacked weight: the reference every kernel is checked against."""
    n, k, group = dims
    if layout == "zero":
        return zero.matmul(x, n, bias)
    weight = FORMATS[layout].unpack(tensors, (n, k), group).to(x.dtype)
    return torch.nn.functional.linear(x, weight, bias)
