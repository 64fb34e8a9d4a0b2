"""ZERO: a weight that was removed entirely. Nothing is stored; the output is the bias, or zeros."""
import torch


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int):
    return ()


def unpack(tensors, shape, group):
    return torch.zeros(shape)


def matmul(x: torch.Tensor, out_features: int, bias):
    out = x.new_zeros(*x.shape[:-1], out_features)
    return out if bias is None else out + bias
