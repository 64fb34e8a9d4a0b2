"""`sparc::linear`: one custom op for every packed format.

`linear(x, weights, bias, layout, dims)` computes x @ W.T + bias for the weight packed in `layout` (its
tensors in `weights`, dims = [out_features, in_features, group, *the layout's extra dims]). Inductor sees an
opaque op with a fake implementation; at run time the layout's Triton kernel does the work on CUDA tensors
and its pure-PyTorch reference elsewhere.
"""
from __future__ import annotations

import torch

from sparc.kernels import matmul


@torch.library.custom_op("sparc::linear", mutates_args=())
def linear(x: torch.Tensor, weights: list[torch.Tensor], bias: torch.Tensor | None, layout: str,
           dims: list[int]) -> torch.Tensor:
    return matmul(x, layout, weights, dims, bias)


@linear.register_fake
def _linear_fake(x, weights, bias, layout, dims):
    return x.new_empty(*x.shape[:-1], dims[0])
