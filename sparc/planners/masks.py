"""Mask builders shared by the planners: 2:4 along the input dim and per-row unstructured."""
import torch


def mask_2of4(scores: torch.Tensor) -> torch.Tensor:
    """Keep the 2 highest scores in each group of 4 consecutive input weights (a short tail group keeps <= 2)."""
    n, k = scores.shape
    kp = -(-k // 4) * 4
    padded = torch.nn.functional.pad(scores.float(), (0, kp - k), value=float("-inf")).reshape(n, kp // 4, 4)
    keep = torch.zeros_like(padded, dtype=torch.bool).scatter_(-1, padded.topk(2, dim=-1).indices, True)
    return keep.reshape(n, kp)[:, :k]


def mask_unstructured_rows(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Drop the round(sparsity * K) lowest scores of every row."""
    n, k = scores.shape
    drop = int(round(sparsity * k))
    mask = torch.ones(n, k, dtype=torch.bool)
    if drop:
        mask.scatter_(1, scores.float().topk(drop, dim=1, largest=False).indices, False)
    return mask
