"""NV24: 2:4 sparsity along the input dim, in NVIDIA's compressed form.

Every group of 4 consecutive input weights keeps 2. Stored: `values` (N, Kp/2) in the activation dtype, the
kept weights in input order, and `meta` (N, Kp/8) uint8 with the 2-bit position of each kept value inside its
group: group g of a row is nibble g % 2 of byte g // 2, low index in bits 0-1, high index in bits 2-3.
K is padded to a multiple of 8 at pack time (padding weights are zero) and cropped by unpack.
"""
import torch

from sparc.errors import SparcError


def padded_k(k: int) -> int:
    return -(-k // 8) * 8


def pad_k(t: torch.Tensor, kp: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, kp - t.shape[1]))


def kept_positions(mask: torch.Tensor) -> torch.Tensor:
    """(N, Kp/4, 2) int64: the two positions kept in each group of 4, ascending. Groups that keep fewer than 2
    are filled with their lowest dropped positions (those slots then hold zeros)."""
    n, kp = mask.shape
    groups = mask.reshape(n, kp // 4, 4)
    if (groups.sum(-1) > 2).any():
        raise SparcError("mask keeps more than 2 of 4 weights in a group: not a 2:4 pattern")
    priority = groups.float() * 8 - torch.arange(4, dtype=torch.float32)
    return priority.topk(2, dim=-1).indices.sort(dim=-1).values


def encode_meta(positions: torch.Tensor) -> torch.Tensor:
    nibbles = (positions[..., 0] | (positions[..., 1] << 2)).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def decode_meta(meta: torch.Tensor) -> torch.Tensor:
    nibbles = torch.stack([meta & 0xF, meta >> 4], dim=-1).reshape(meta.shape[0], -1).long()
    return torch.stack([nibbles & 3, nibbles >> 2], dim=-1)


def compress(weight: torch.Tensor, mask: torch.Tensor):
    """(values (N, Kp/2) float32, meta) of the masked weight."""
    kp = padded_k(weight.shape[1])
    weight, mask = pad_k(weight * mask, kp), pad_k(mask, kp)
    positions = kept_positions(mask)
    values = weight.reshape(weight.shape[0], kp // 4, 4).gather(-1, positions)
    return values.reshape(weight.shape[0], kp // 2), encode_meta(positions)


def expand(values: torch.Tensor, meta: torch.Tensor, shape) -> torch.Tensor:
    n, k = shape
    positions = decode_meta(meta)
    groups = torch.zeros(n, positions.shape[1], 4, dtype=values.dtype, device=values.device)
    groups.scatter_(-1, positions, values.reshape(n, -1, 2))
    return groups.reshape(n, -1)[:, :k]


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int):
    values, meta = compress(weight, mask)
    return values.to(dtype).contiguous(), meta.contiguous()


def unpack(tensors, shape, group):
    values, meta = tensors
    return expand(values, meta, shape)
