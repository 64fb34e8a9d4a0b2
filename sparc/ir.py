"""The plan IR: what every planner writes and everything downstream (packing, kernels, dumps) reads.

A `Plan` holds one `LayerPlan` per planned weight, keyed by the parameter's qualified name, and a signature of
the weights it was made for. A `LayerPlan` is a grid of tile formats over the (out_features x in_features)
weight, the element mask, optional quantization settings and replacement weights (for planners that update
weights), and the provenance of the decision. Saved as JSON plus a compressed array file; the round trip is exact.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from .errors import PlanMismatch, SparcError

PLAN_VERSION = 1


class TileFormat(enum.IntEnum):
    DENSE = 0
    NV24 = 1
    INT4 = 2
    NV24_INT4 = 3
    ZERO = 4


@dataclasses.dataclass(frozen=True)
class WeightSignature:
    shape: tuple[int, ...]
    dtype: str
    digest: str


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Raw values as numpy; bf16 (which numpy lacks) travels as its int16 bit pattern."""
    data = tensor.detach().to("cpu").contiguous()
    return (data.view(torch.int16) if data.dtype == torch.bfloat16 else data).numpy()


def tensor_from_numpy(array: np.ndarray, dtype: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(array))
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def weight_signature(weight: torch.Tensor) -> WeightSignature:
    digest = hashlib.blake2b(tensor_to_numpy(weight).tobytes(), digest_size=12).hexdigest()
    return WeightSignature(tuple(weight.shape), _dtype_name(weight), digest)


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


@dataclasses.dataclass(eq=False)
class LayerPlan:
    """How one weight is stored. Shapes are logical: (out_features, in_features), whatever the parameter's layout."""

    shape: tuple[int, int]
    tile: int
    formats: np.ndarray  # uint8 (ceil(N / tile), ceil(K / tile)) of TileFormat
    mask: torch.Tensor  # bool (N, K): True where the weight is kept
    group: int = 0  # quantization group along the input dim, for INT4 and NV24_INT4 tiles
    transposed: bool = False  # the parameter is stored (in_features, out_features), like GPT-2's Conv1D
    weight: torch.Tensor | None = None  # replacement weights (N, K) for planners that update them
    provenance: dict = dataclasses.field(default_factory=dict)
    block_n: int = 0  # > 0: the mask drops whole (block_n x group) blocks of INT4 tiles, stored block-sparse
    scales: torch.Tensor | None = None  # int4 scales (N, ceil(K / group)) chosen by the planner, else round-to-nearest
    mins: torch.Tensor | None = None  # int4 minimums, same shape

    def __post_init__(self):
        n, k = self.shape
        grid = (-(-n // self.tile), -(-k // self.tile))
        if self.formats.shape != grid:
            raise SparcError(f"tile grid {self.formats.shape} does not cover shape {self.shape} with tile {self.tile}")
        if tuple(self.mask.shape) != (n, k):
            raise SparcError(f"mask shape {tuple(self.mask.shape)} differs from layer shape {self.shape}")

    @property
    def format_set(self) -> set[TileFormat]:
        return {TileFormat(int(f)) for f in np.unique(self.formats)}

    @property
    def sparsity(self) -> float:
        return 1.0 - self.mask.float().mean().item()

    def tile_mask(self, fmt: TileFormat) -> torch.Tensor:
        """Bool (N, K): the elements that lie in tiles of format `fmt`."""
        grid = torch.from_numpy(self.formats == fmt)
        full = grid.repeat_interleave(self.tile, 0).repeat_interleave(self.tile, 1)
        return full[: self.shape[0], : self.shape[1]]

    def describe(self) -> str:
        names = sorted(f.name.lower() for f in self.format_set)
        quant = f" g{self.group}" if self.group and self.format_set & {TileFormat.INT4, TileFormat.NV24_INT4} else ""
        return "+".join(names) + quant


def uniform_layer(shape, fmt: TileFormat, mask: torch.Tensor, tile: int, **fields) -> LayerPlan:
    grid = (-(-shape[0] // tile), -(-shape[1] // tile))
    return LayerPlan(tuple(shape), tile, np.full(grid, int(fmt), dtype=np.uint8), mask, **fields)


@dataclasses.dataclass(eq=False)
class Plan:
    layers: dict[str, LayerPlan]
    signature: dict[str, WeightSignature]
    method: str = "dense"
    settings: dict = dataclasses.field(default_factory=dict)
    packed_cache: dict = dataclasses.field(default_factory=dict, repr=False)  # (name, device, dtype) -> packed

    def check(self, weights: dict[str, torch.Tensor], names=None) -> None:
        """Raise PlanMismatch naming the first planned parameter (of `names`, default all) that is missing from
        `weights` or differs from what the plan was made for."""
        for name in self.signature if names is None else names:
            expected = self.signature[name]
            if name not in weights:
                raise PlanMismatch(f"plan expects parameter '{name}', which the model does not have; "
                                   "this plan was made for another model")
            actual = weight_signature(weights[name])
            for field in ("shape", "dtype", "digest"):
                if getattr(actual, field) != getattr(expected, field):
                    raise PlanMismatch(f"parameter '{name}' differs from the plan in {field} (plan "
                                       f"{getattr(expected, field)}, model {getattr(actual, field)}): the plan was "
                                       "made for other weights; re-plan this model")

    def save(self, path: str | Path) -> None:
        path = Path(path)
        arrays, header = {}, {"version": PLAN_VERSION, "method": self.method, "settings": self.settings, "layers": {}}
        header["signature"] = {n: dataclasses.asdict(s) for n, s in self.signature.items()}
        for i, (name, layer) in enumerate(self.layers.items()):
            arrays[f"{i}.formats"] = layer.formats
            arrays[f"{i}.mask"] = np.packbits(layer.mask.numpy().reshape(-1))
            for field in ("weight", "scales", "mins"):
                if getattr(layer, field) is not None:
                    arrays[f"{i}.{field}"] = tensor_to_numpy(getattr(layer, field))
            header["layers"][name] = {"index": i, "shape": list(layer.shape), "tile": layer.tile, "group": layer.group,
                                      "transposed": layer.transposed,
                                      "block_n": layer.block_n, "dtypes": _dtypes(layer),
                                      "provenance": layer.provenance}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        blob = buffer.getvalue()
        header["arrays_digest"] = hashlib.blake2b(blob, digest_size=16).hexdigest()
        _arrays_path(path).write_bytes(blob)
        path.write_text(json.dumps(header, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        try:
            header = json.loads(path.read_text())
            blob = _arrays_path(path).read_bytes()
        except (OSError, json.JSONDecodeError) as error:
            raise SparcError(f"cannot read plan '{path}' and its arrays '{_arrays_path(path).name}': {error}") from None
        if header.get("version") != PLAN_VERSION:
            raise SparcError(f"plan '{path}' has version {header.get('version')}, this sparc reads version "
                             f"{PLAN_VERSION}: re-plan the model")
        if hashlib.blake2b(blob, digest_size=16).hexdigest() != header.get("arrays_digest"):
            raise SparcError(f"plan arrays '{_arrays_path(path).name}' do not belong to '{path.name}' (stale or "
                             "corrupt): save the plan again")
        arrays = np.load(io.BytesIO(blob))
        layers = {name: _layer_from_json(entry, arrays) for name, entry in header["layers"].items()}
        signature = {n: WeightSignature(tuple(s["shape"]), s["dtype"], s["digest"]) for n, s in header["signature"].items()}
        return cls(layers, signature, header["method"], header["settings"])


def _arrays_path(path: Path) -> Path:
    return path.with_name(path.name + ".npz")


def _layer_from_json(entry: dict, arrays) -> LayerPlan:
    i, shape = entry["index"], tuple(entry["shape"])
    bits = np.unpackbits(arrays[f"{i}.mask"], count=shape[0] * shape[1])
    mask = torch.from_numpy(bits.astype(bool).reshape(shape))
    tensors = {field: tensor_from_numpy(arrays[f"{i}.{field}"], dtype) for field, dtype in entry["dtypes"].items()}
    return LayerPlan(shape, entry["tile"], arrays[f"{i}.formats"], mask, entry["group"], entry["transposed"],
                     provenance=entry["provenance"], block_n=entry["block_n"], **tensors)


def _dtypes(layer: LayerPlan) -> dict[str, str]:
    return {field: _dtype_name(getattr(layer, field)) for field in ("weight", "scales", "mins")
            if getattr(layer, field) is not None}
