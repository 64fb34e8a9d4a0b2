"""Programmatic dependent launch (`kernels.pdl`): where the Gluon kernels wait for the kernel before them and
release the next one, in their sm_90 code compiled on the CPU; on the GPU, layers that feed each other inside a
CUDA graph against the same layers run one at a time."""
import numpy as np
import pytest
import torch

from sparc import kernels
from sparc.ir import TileFormat
from sparc.kernels import pdl
from test_int4_mma import compiled_loop
from test_kernels import make_case


@pytest.mark.parametrize("kernel, config", [
    ("int4", (64, 1024, 128, 4)), ("nv24", (16, 1024, 0, 8)), ("nv24_int4", (16, 1024, 128, 8)),
    ("bsr_int4", (8, 128, 128, 4)), ("hybrid", (32, 128, 0, 4)), ("mma", (128, 128, 128, 4, 16)),
    ("mma_bsr", (64, 128, 128, 4, 16)), ("mma_nv24", (128, 8, 16)), ("mma_hybrid", (64, 4, 16, 1, 1)),
    ("wgmma", (64, 128, 8, 128))])
def test_kernels_wait_before_the_loop_and_release_after_it(kernel, config):
    """One wait ahead of every global load and store (so ahead of the K loop), and one release after the loop."""
    where = compiled_loop("--pdl", kernel, *config)
    assert where["waits"] == 1 and where["releases"] == 1
    assert where["wait_before_loop"] and where["release_after_loop"]
    assert where["loads_before_wait"] == 0 and where["stores_before_wait"] == 0


def test_off_the_gpu_nothing_launches_dependently():
    assert not pdl.enabled(torch.zeros(1))


def chain(x0, packed, layers: int):
    """Each layer's output is the next one's input."""
    outs = [x0]
    for _ in range(layers):
        outs.append(kernels.matmul(outs[-1], packed.layout, packed.tensors, packed.dims, None))
    return outs


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["int4", "nv24", "nv24_int4", "bsr_int4", "hybrid"])
@pytest.mark.parametrize("m", [1, 16, 64])
def test_layers_that_feed_each_other_in_a_cuda_graph_gpu(layout, m):
    """A layer launched dependently must not read its input before the layer before has written it: after
    each replay with a fresh first input, every layer's output equals the layer run alone on its input.
    Split-K partials of successive layers share the graph's memory pool, so early writes would show too."""
    formats = np.where(np.add.outer(np.arange(8), np.arange(8)) % 3 == 0, TileFormat.DENSE, TileFormat.NV24)
    packed = make_case(layout, 1024, 1024, torch.bfloat16, 128, 1.0, 5, formats=formats.astype(np.uint8))
    packed = packed.pack().to("cuda")
    x0 = torch.randn(m, 1024, device="cuda", dtype=torch.bfloat16)
    chain(x0, packed, 1)  # compile outside the graph
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = chain(x0, packed, 6)
    for _ in range(3):
        x0.copy_(torch.randn_like(x0) / 32)
        graph.replay()
        torch.cuda.synchronize()
        for before, after in zip(outs, outs[1:]):
            alone = kernels.matmul(before, packed.layout, packed.tensors, packed.dims, None)
            torch.cuda.synchronize()
            assert torch.equal(after, alone)
