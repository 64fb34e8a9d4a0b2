"""NV24: 2:4 sparsity along the input dim, in NVIDIA's compressed form.

Every group of 4 consecutive input weights keeps 2. Stored: `values` (N, Kp/2) in the activation dtype, the
kept weights in input order, and `meta` (N, Kp/8) uint8 with the 2-bit position of each kept value inside its
group: group g of a row is nibble g % 2 of byte g // 2, low index in bits 0-1, high index in bits 2-3.
K is padded to a multiple of 8 at pack time (padding weights are zero) and cropped by unpack.

Kernel piece: `nv24_block` rebuilds a dense (BLOCK_N x BLOCK_K) weight block from BLOCK_K / 2 values and
BLOCK_K / 8 meta bytes per row (1.125 bytes per weight in bf16). The values split into the first and second
kept value of each group of 4 (v0, v1), the meta bytes into one nibble per group, and `expand_24` places
v0 / v1 at their 2-bit positions with zeros elsewhere; the block then feeds a dense tl.dot.
"""
import torch
import triton
import triton.language as tl

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
    priority = groups.float() * 8 - torch.arange(4, dtype=torch.float32, device=mask.device)
    return priority.topk(2, dim=-1).indices.sort(dim=-1).values


def encode_meta(positions: torch.Tensor) -> torch.Tensor:
    nibbles = (positions[..., 0] | (positions[..., 1] << 2)).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def decode_meta(meta: torch.Tensor) -> torch.Tensor:
    nibbles = torch.stack([meta & 0xF, meta >> 4], dim=-1).reshape(meta.shape[0], -1).long()
    return torch.stack([nibbles & 3, nibbles >> 2], dim=-1)


# byte -> input positions (within its 8 inputs) of the 4 values it places: one table lookup decodes a byte
_BYTE_POSITIONS = torch.tensor([[b & 3, (b >> 2) & 3, 4 + ((b >> 4) & 3), 4 + (b >> 6)] for b in range(256)])


def compress(weight: torch.Tensor, mask: torch.Tensor):
    """(values (N, Kp/2) float32, meta) of the masked weight."""
    kp = padded_k(weight.shape[1])
    weight, mask = pad_k(weight * mask, kp), pad_k(mask, kp)
    positions = kept_positions(mask)
    values = weight.reshape(weight.shape[0], kp // 4, 4).gather(-1, positions)
    return values.reshape(weight.shape[0], kp // 2), encode_meta(positions)


def expand(values: torch.Tensor, meta: torch.Tensor, shape) -> torch.Tensor:
    n, k = shape
    offsets = 8 * torch.arange(meta.shape[1], device=meta.device)[:, None]
    columns = (_BYTE_POSITIONS.to(meta.device)[meta.long()] + offsets).reshape(n, -1)
    dense = torch.zeros(n, 8 * meta.shape[1], dtype=values.dtype, device=values.device)
    return dense.scatter_(1, columns, values)[:, :k]


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int):
    values, meta = compress(weight, mask)
    return values.to(dtype).contiguous(), meta.contiguous()


def unpack(tensors, shape, group):
    values, meta = tensors
    return expand(values, meta, shape)


@triton.jit
def load_nibbles(meta_ptr, row_start, row_ok, padded, k0, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The index nibble of each group of 4 in the block, (BLOCK_N, BLOCK_K / 4); rows start at input position
    row_start (a multiple of 8) and are `padded` positions long."""
    offs = tl.arange(0, BLOCK_K // 8)
    ptrs = meta_ptr + (row_start // 8)[:, None] + (k0 // 8 + offs)[None, :]
    meta = tl.load(ptrs, mask=row_ok[:, None] & (k0 + 8 * offs < padded)[None, :], other=0)
    return tl.reshape(tl.join(meta & 0xF, meta >> 4), (BLOCK_N, BLOCK_K // 4))


@triton.jit
def expand_24(v0, v1, nibbles, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Dense (BLOCK_N, BLOCK_K) from the kept values v0, v1 (BLOCK_N, BLOCK_K / 4) of each group of 4."""
    low, high = nibbles & 3, (nibbles >> 2) & 3
    w0 = tl.where(low == 0, v0, tl.where(high == 0, v1, 0.0))
    w1 = tl.where(low == 1, v0, tl.where(high == 1, v1, 0.0))
    w2 = tl.where(low == 2, v0, tl.where(high == 2, v1, 0.0))
    w3 = tl.where(low == 3, v0, tl.where(high == 3, v1, 0.0))
    return tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), (BLOCK_N, BLOCK_K))


@triton.jit
def nv24_block(values_ptr, meta_ptr, base, rows, row_ok, width, k0, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               UPCAST: tl.constexpr = True):
    """Weight block (rows, k0 .. k0 + BLOCK_K) of rows `width` inputs long (padded to 8) that start at input
    position base + r * padded width; fp32 when UPCAST, else in the values' dtype."""
    padded = tl.cdiv(width, 8) * 8
    row_start = base + rows.to(tl.int64) * padded
    offs = tl.arange(0, BLOCK_K // 2)
    ptrs = values_ptr + (row_start // 2)[:, None] + (k0 // 2 + offs)[None, :]
    values = tl.load(ptrs, mask=row_ok[:, None] & (k0 + 2 * offs < padded)[None, :], other=0.0)
    if UPCAST:
        values = values.to(tl.float32)
    v0, v1 = tl.split(tl.reshape(values, (BLOCK_N, BLOCK_K // 4, 2)))
    nibbles = load_nibbles(meta_ptr, row_start, row_ok, padded, k0, BLOCK_N, BLOCK_K)
    return expand_24(v0, v1, nibbles, BLOCK_N, BLOCK_K)
