"""DENSE: the (masked) weight as is, in the activation dtype."""
import torch


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int):
    return ((weight * mask).to(dtype).contiguous(),)


def unpack(tensors, shape, group):
    return tensors[0]
