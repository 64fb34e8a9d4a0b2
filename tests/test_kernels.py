"""Every weight format: pack / unpack against the masked weight, the Triton kernel against the reference, and
packed sizes against the format's ideal bytes.

On the CPU the kernels run under TRITON_INTERPRET=1 with small shapes; `pytest -m gpu` runs them natively on a
CUDA device with larger shapes, inside CUDA graphs and through torch.compile.

Packed size against the ideal bytes of the unpadded shape (bf16, group 128; hybrid: tile 128, a repeating
DENSE / NV24 / INT4 / NV24_INT4 / ZERO grid; bsr_int4: block_n 16, every other block kept). `test_size_table`
keeps the numbers true. The 100 x 300 rows are dominated by padding (K to the group, N to the block); the 5%
rule is tested on shapes whose padding is under 5% (`test_packed_size_is_ideal`).

| layout    | N x K       | ideal bytes | packed bytes | bytes / weight | packed / ideal |
|-----------|-------------|-------------|--------------|----------------|----------------|
| dense     | 1024 x 4096 | 8388608     | 8388608      | 2.000          | 1.000          |
| nv24      | 1024 x 4096 | 4718592     | 4718592      | 1.125          | 1.000          |
| int4      | 1024 x 4096 | 2228224     | 2228224      | 0.531          | 1.000          |
| nv24_int4 | 1024 x 4096 | 1638400     | 1638400      | 0.391          | 1.000          |
| bsr_int4  | 1024 x 4096 | 1116420     | 1116420      | 0.266          | 1.000          |
| hybrid    | 1024 x 4096 | 3429632     | 3429632      | 0.818          | 1.000          |
| int4      | 576 x 1536  | 470016      | 470016       | 0.531          | 1.000          |
| nv24_int4 | 576 x 1536  | 345600      | 345600       | 0.391          | 1.000          |
| hybrid    | 576 x 1536  | 729372      | 729372       | 0.824          | 1.000          |
| int4      | 100 x 300   | 15937.5     | 20400        | 0.680          | 1.280          |
| bsr_int4  | 100 x 300   | 8206        | 12022        | 0.401          | 1.465          |
| hybrid    | 100 x 300   | 42364.5     | 46827        | 1.561          | 1.105          |
"""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sparc import kernels
from sparc.errors import SparcError
from sparc.ir import TileFormat

LAYOUTS = ["dense", "nv24", "int4", "nv24_int4", "zero", "bsr_int4", "hybrid"]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
KERNEL_TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
QUANTIZED = {"int4": ((0,), (2,)), "nv24_int4": ((0,), (2,)), "bsr_int4": ((2,), (4,)), "hybrid": ((5, 8), (7, 10))}

SIZE_TABLE = [  # (layout, (N, K), ideal bytes, packed bytes): bf16, group 128, masks from `table_case`
    ("dense", (1024, 4096), 8388608, 8388608),
    ("nv24", (1024, 4096), 4718592, 4718592),
    ("int4", (1024, 4096), 2228224, 2228224),
    ("nv24_int4", (1024, 4096), 1638400, 1638400),
    ("bsr_int4", (1024, 4096), 1116420, 1116420),
    ("hybrid", (1024, 4096), 3429632, 3429632),
    ("int4", (576, 1536), 470016, 470016),
    ("nv24_int4", (576, 1536), 345600, 345600),
    ("hybrid", (576, 1536), 729372, 729372),
    ("int4", (100, 300), 15937.5, 20400),
    ("bsr_int4", (100, 300), 8206, 12022),
    ("hybrid", (100, 300), 42364.5, 46827),
]


@dataclasses.dataclass
class Case:
    layout: str
    weight: torch.Tensor
    mask: torch.Tensor
    dtype: torch.dtype
    group: int
    options: dict

    def pack(self) -> kernels.PackedWeight:
        return kernels.pack(self.layout, self.weight, self.mask, self.dtype, self.group, **self.options)


def mask_24(n: int, k: int, density: float, gen: torch.Generator) -> torch.Tensor:
    """A 2:4 mask along K: two random positions of each group of 4, each then kept with probability `density`."""
    groups = -(-k // 4)
    top2 = torch.rand(n, groups, 4, generator=gen).topk(2, dim=-1).indices
    mask = torch.zeros(n, groups, 4, dtype=torch.bool).scatter_(-1, top2, True)
    return (mask & (torch.rand(n, groups, 4, generator=gen) < density)).reshape(n, -1)[:, :k]


def tile_map(formats: np.ndarray, tile: int, shape) -> torch.Tensor:
    grid = torch.from_numpy(np.asarray(formats)).long()
    return grid.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[: shape[0], : shape[1]]


def make_case(layout, n, k, dtype, group, density, seed, formats=None, tile=128, block_n=16, block_density=0.5):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, k, generator=gen) * 0.5
    free = torch.rand(n, k, generator=gen) < density
    options = {}
    if layout in ("nv24", "nv24_int4"):
        mask = mask_24(n, k, density, gen)
    elif layout == "hybrid":
        fmt = tile_map(formats, tile, (n, k))
        paired = (fmt == TileFormat.NV24) | (fmt == TileFormat.NV24_INT4)
        mask = torch.where(paired, mask_24(n, k, density, gen), free) & (fmt != TileFormat.ZERO)
        options = {"formats": formats, "tile": tile}
    elif layout == "bsr_int4":
        nb, kb = -(-n // block_n), -(-k // group)
        blocks = torch.rand(nb, kb, generator=gen) < block_density
        mask = free & blocks.repeat_interleave(block_n, 0).repeat_interleave(group, 1)[:n, :k]
        options = {"block_n": block_n}
    elif layout == "zero":
        mask = torch.zeros(n, k, dtype=torch.bool)
    else:
        mask = free
    return Case(layout, weight, mask, dtype, group, options)


@st.composite
def cases(draw, layout, max_n=160, max_k=320, dtypes=DTYPES):
    n, k = draw(st.integers(1, max_n)), draw(st.integers(1, max_k))
    dtype = draw(st.sampled_from(dtypes))
    group = draw(st.sampled_from([32, 64, 128]))
    density = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    extra = {}
    if layout == "hybrid":
        tile = draw(st.sampled_from([64, 128]))
        kinds = draw(st.lists(st.sampled_from(list(TileFormat)), min_size=1, max_size=5, unique=True))
        grid = (-(-n // tile), -(-k // tile))
        codes = draw(st.lists(st.sampled_from(kinds), min_size=grid[0] * grid[1], max_size=grid[0] * grid[1]))
        extra = {"tile": tile, "formats": np.array(codes, dtype=np.uint8).reshape(grid)}
    elif layout == "bsr_int4":
        extra = {"block_n": draw(st.sampled_from([16, 32, 64])), "block_density": draw(st.floats(0.0, 1.0))}
    return make_case(layout, n, k, dtype, group, density, draw(st.integers(0, 2**31)), **extra)


def quantized_elements(packed: kernels.PackedWeight) -> torch.Tensor:
    if packed.layout == "hybrid":
        fmt = tile_map(packed.tensors[0].cpu().numpy(), packed.dims[3], packed.shape)
        return (fmt == TileFormat.INT4) | (fmt == TileFormat.NV24_INT4)
    return torch.full(packed.shape, packed.layout in QUANTIZED)


def step_map(packed: kernels.PackedWeight) -> torch.Tensor:
    """The quantization step of every quantized element: unpack with every q = 1 and every minimum 0."""
    q_tensors, min_tensors = QUANTIZED.get(packed.layout, ((), ()))
    tensors = list(packed.tensors)
    for i in q_tensors:
        tensors[i] = torch.full_like(tensors[i], 0x11)
    for i in min_tensors:
        tensors[i] = torch.zeros_like(tensors[i])
    return kernels.unpack(dataclasses.replace(packed, tensors=tuple(tensors))).float()


def check_roundtrip(case: Case) -> None:
    packed = case.pack()
    unpacked = kernels.unpack(packed).float()
    masked = case.weight * case.mask
    assert unpacked.shape == masked.shape
    quantized = quantized_elements(packed)
    exact = masked.to(case.dtype).float()
    assert torch.equal(unpacked[~quantized], exact[~quantized])
    step, eps = step_map(packed), torch.finfo(case.dtype).eps
    tolerance = 0.5 * step + eps * (2 * masked.abs() + 40 * step + unpacked.abs())
    assert ((unpacked - masked).abs() <= tolerance)[quantized].all()


def check_kernel(case: Case, m: int, split_k, with_bias: bool, device="cpu") -> None:
    packed = case.pack().to(device)
    gen = torch.Generator().manual_seed(m)
    n, k = packed.shape
    x = torch.randn(m, k, generator=gen).to(device, case.dtype)
    bias = torch.randn(n, generator=gen).to(device, case.dtype) if with_bias else None
    out = torch.full((m, n), float("nan"), dtype=case.dtype, device=device)
    partials = None if split_k is None else torch.full((split_k, m, n), float("nan"), device=device)
    actual = kernels.triton_matmul(x, case.layout, packed.tensors, packed.dims, bias, split_k=split_k, out=out,
                                   partials=partials)
    assert actual.data_ptr() == out.data_ptr()
    assert_matches_reference(actual, x, packed, bias)


def assert_matches_reference(actual, x, packed: kernels.PackedWeight, bias) -> None:
    """actual == x @ unpack(packed).T + bias within the dtype's tolerance relative to |x| @ |W|.T + |bias|."""
    weight = kernels.unpack(packed).to(x.device).double()
    expected = x.double() @ weight.T + (0 if bias is None else bias.double())
    scale = x.double().abs() @ weight.abs().T + (0 if bias is None else bias.double().abs())
    error = (actual.double() - expected).abs()
    assert not actual.isnan().any()
    assert (error <= KERNEL_TOLERANCE[x.dtype] * scale + 1e-6).all(), error.max().item()


def ideal_nbytes(fmt: TileFormat, rows: int, width: int, group: int, elem: int, padded: bool) -> float:
    """Ideal bytes of a (rows x width) matrix in a tile format; `padded` rounds width up as the format pads."""
    unit = {TileFormat.NV24: 8, TileFormat.INT4: group, TileFormat.NV24_INT4: 2 * group}.get(fmt, 1)
    size = rows * (-(-width // unit) * unit if padded else width)
    return {TileFormat.DENSE: size * elem, TileFormat.NV24: size / 2 * elem + size / 8,
            TileFormat.INT4: size / 2 + 2 * size / group * elem,
            TileFormat.NV24_INT4: size / 4 + size / 8 + 2 * (size / 2) / group * elem, TileFormat.ZERO: 0}[fmt]


def ideal_bytes(case: Case, padded: bool) -> float:
    n, k = case.weight.shape
    elem = torch.empty(0, dtype=case.dtype).element_size()
    if case.layout == "bsr_int4":
        block_n, group = case.options["block_n"], case.group
        kept = [(i, j) for i in range(0, n, block_n) for j in range(0, k, group)
                if case.mask[i:i + block_n, j:j + group].any()]
        rows = [block_n if padded else min(block_n, n - i) for i, _ in kept]
        widths = [group if padded else min(group, k - j) for _, j in kept]
        index = 2 if -(-k // group) < 2**15 else 4
        payload = sum(r * w / 2 + 2 * r * elem for r, w in zip(rows, widths))
        return payload + len(kept) * index + 4 * (-(-n // block_n) + 1)
    if case.layout == "hybrid":
        tile, formats = case.options["tile"], case.options["formats"]
        total = formats.size * 9  # the grid: a format byte and an int64 offset per tile
        for (i, j), code in np.ndenumerate(formats):
            fmt = TileFormat(int(code))
            group = min(case.group, tile) if fmt == TileFormat.INT4 else min(case.group, tile // 2)
            total += ideal_nbytes(fmt, min(tile, n - i * tile), min(tile, k - j * tile), group, elem, padded)
        return total
    fmt = {"dense": TileFormat.DENSE, "nv24": TileFormat.NV24, "int4": TileFormat.INT4,
           "nv24_int4": TileFormat.NV24_INT4, "zero": TileFormat.ZERO}[case.layout]
    return ideal_nbytes(fmt, n, k, case.group, elem, padded)


def table_case(layout: str, shape) -> Case:
    n, k = shape
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(n, k, generator=gen)
    if layout in ("nv24", "nv24_int4"):
        return Case(layout, weight, mask_24(n, k, 1.0, gen), torch.bfloat16, 128, {})
    if layout == "hybrid":
        grid = (-(-n // 128), -(-k // 128))
        formats = (np.arange(grid[0] * grid[1]) % 5).astype(np.uint8).reshape(grid)
        return make_case("hybrid", n, k, torch.bfloat16, 128, 1.0, 0, formats=formats)
    if layout == "bsr_int4":
        blocks = (torch.arange(-(-n // 16))[:, None] + torch.arange(-(-k // 128))[None, :]) % 2 == 0
        mask = blocks.repeat_interleave(16, 0).repeat_interleave(128, 1)[:n, :k]
        return Case(layout, weight, mask, torch.bfloat16, 128, {"block_n": 16})
    return Case(layout, weight, torch.ones(n, k, dtype=torch.bool), torch.bfloat16, 128, {})


CPU = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GPU = settings(deadline=None, max_examples=10, suppress_health_check=list(HealthCheck),
               phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: each new shape compiles
M_VALUES = st.sampled_from([1, 2, 3, 16, 17, 300]) | st.integers(1, 300)


@pytest.mark.parametrize("layout", LAYOUTS)
@settings(CPU, max_examples=50)
@given(data=st.data())
def test_unpack_of_pack_is_the_masked_weight(layout, data):
    check_roundtrip(data.draw(cases(layout)))


@pytest.mark.parametrize("layout", LAYOUTS)
@settings(CPU, max_examples=40)
@given(data=st.data())
def test_kernel_matches_reference(layout, data):
    case = data.draw(cases(layout))
    check_kernel(case, data.draw(M_VALUES), data.draw(st.sampled_from([None, 1, 2, 3])), data.draw(st.booleans()))


@pytest.mark.parametrize("layout", ["int4", "nv24_int4", "bsr_int4"])
def test_fp32_weights_near_zero_stay_exact_at_one_row(layout):
    check_weights_near_zero(layout, "cpu")


def check_weights_near_zero(layout: str, device: str) -> None:
    """fp32 x at M = 1, each row one negative weight among zeros: in its group q s + m of the zeros cancels to
    nearly 0 from terms near 1, so a kernel that shares the scale over the group (16 s * sum f x + (m - 16 s) *
    sum x, over x of ones) rounds at their size, far above the product x_j w_j of 0.01 times the weight."""
    n, k = 16, 256
    weight = torch.zeros(n, k)
    weight[:, 3] = -0.6 - 0.01 * torch.arange(n)
    kept = torch.tensor([False, False, True, True]) if layout == "nv24_int4" else torch.ones(4, dtype=torch.bool)
    packed = kernels.pack(layout, weight, kept.repeat(n, k // 4), torch.float32, 32).to(device)
    x = torch.ones(1, k, device=device)
    x[0, 3] = 0.01
    assert_matches_reference(kernels.triton_matmul(x, layout, packed.tensors, packed.dims, None), x, packed, None)


@pytest.mark.parametrize("layout", LAYOUTS)
@settings(CPU, max_examples=15)
@given(data=st.data())
def test_packed_size_is_ideal(layout, data):
    """Exactly the ideal bytes of the padded shape, and within 5% of the unpadded shape's where padding is
    under 5% (N and K of at least 42 padding units)."""
    case = data.draw(cases(layout, max_n=48, max_k=600))
    assert case.pack().nbytes == ideal_bytes(case, padded=True)
    n_unit, k_unit = padding_units(case)
    n = data.draw(st.integers(42 * n_unit, 42 * n_unit + 40))
    k = data.draw(st.integers(42 * k_unit, 42 * k_unit + 300))
    tile = case.options.get("tile", 128)
    formats = np.resize(case.options.get("formats", np.zeros(1, np.uint8)), (-(-n // tile), -(-k // tile)))
    large = make_case(layout, n, k, case.dtype, case.group, 0.5, n * k, formats=formats, tile=tile,
                      block_n=case.options.get("block_n", 16))
    assert large.pack().nbytes <= 1.05 * ideal_bytes(large, padded=False)


def padding_units(case: Case) -> tuple[int, int]:
    """How far N and K are padded at most (hybrid: its widest per-tile unit, 2 * min(group, 64))."""
    k_unit = {"nv24": 8, "int4": case.group, "nv24_int4": 2 * case.group, "bsr_int4": case.group,
              "hybrid": 128}.get(case.layout, 1)
    return case.options.get("block_n", 1), k_unit


@pytest.mark.parametrize("row", SIZE_TABLE, ids=[f"{r[0]}-{r[1][0]}x{r[1][1]}" for r in SIZE_TABLE])
def test_size_table(row):
    layout, shape, ideal, packed = row
    case = table_case(layout, shape)
    assert (ideal_bytes(case, padded=False), case.pack().nbytes) == (ideal, packed)


def test_matmul_runs_the_reference_on_the_cpu():
    case = make_case("int4", 40, 70, torch.float32, 32, 0.5, 1)
    packed, x = case.pack(), torch.randn(3, 5, 70)
    expected = kernels.reference_matmul(x, "int4", packed.tensors, packed.dims, None)
    assert torch.equal(kernels.matmul(x, "int4", packed.tensors, packed.dims, None), expected)


def test_kernel_keeps_leading_dims_and_empty_batches():
    case = make_case("nv24", 40, 70, torch.float32, 32, 1.0, 2)
    packed = case.pack()
    x = torch.randn(2, 3, 70)
    out = kernels.triton_matmul(x, "nv24", packed.tensors, packed.dims, None)
    expected = kernels.reference_matmul(x, "nv24", packed.tensors, packed.dims, None)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert kernels.triton_matmul(x[:0], "nv24", packed.tensors, packed.dims, None).shape == (0, 3, 40)


def test_extra_dims():
    assert make_case("bsr_int4", 40, 70, torch.float32, 32, 1.0, 3, block_n=32).pack().dims == [40, 70, 32, 32]
    hybrid = make_case("hybrid", 40, 70, torch.float32, 0, 1.0, 3, formats=np.zeros((1, 2), np.uint8), tile=64)
    assert hybrid.pack().dims == [40, 70, 0, 64]


@pytest.mark.parametrize("options, message", [
    ({"layout": "hybrid", "tile": 96, "formats": np.zeros((1, 1), np.uint8)}, "tile"),
    ({"layout": "hybrid", "tile": 64, "formats": np.zeros((2, 2), np.uint8)}, "grid"),
    ({"layout": "bsr_int4", "block_n": 8}, "block_n"),
    ({"layout": "bsr_int4", "block_n": 16, "group": 48}, "group"),
])
def test_bad_options_are_refused(options, message):
    options = dict(options)
    layout, group = options.pop("layout"), options.pop("group", 32)
    with pytest.raises(SparcError, match=message):
        kernels.pack(layout, torch.randn(40, 70), torch.ones(40, 70), torch.float32, group, **options)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["int4", "nv24_int4", "bsr_int4"])
def test_fp32_weights_near_zero_stay_exact_at_one_row_gpu(layout):
    check_weights_near_zero(layout, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@settings(GPU)
@given(data=st.data())
def test_kernel_matches_reference_gpu(layout, data):
    dtypes = [torch.bfloat16, torch.bfloat16, torch.float16, torch.float32]
    case = data.draw(cases(layout, max_n=2500, max_k=2500, dtypes=dtypes))
    check_kernel(case, data.draw(M_VALUES), data.draw(st.sampled_from([None, None, 1, 4])), data.draw(st.booleans()),
                 device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("tile", [64, 128])
@pytest.mark.parametrize("k", [673, 674, 675, 676])
def test_hybrid_decode_reads_a_last_nv24_column_of_any_width_gpu(tile, k):
    """The last tile column's width may end inside a group of 4 inputs (K % 4 != 0): its partial group's values
    and x pair still count. DENSE and NV24 tiles in a checkerboard: both formats end a row of tiles."""
    grid = (3, -(-k // tile))
    formats = (np.add.outer(np.arange(grid[0]), np.arange(grid[1])) % 2).astype(np.uint8)
    assert {TileFormat(f) for f in formats.flat} == {TileFormat.DENSE, TileFormat.NV24}
    case = make_case("hybrid", 3 * tile - 5, k, torch.bfloat16, 64, 0.5, k, formats=formats, tile=tile)
    packed = case.pack().to("cuda")
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    assert kernels.kernel_name(x, "hybrid", packed.tensors, packed.dims) == "decode"
    assert_matches_reference(kernels.matmul(x, "hybrid", packed.tensors, packed.dims, None), x, packed, None)


def gpu_packed(layout: str) -> kernels.PackedWeight:
    formats = (np.arange(8 * 12) % 5).astype(np.uint8).reshape(8, 12)
    return make_case(layout, 1000, 1500, torch.bfloat16, 128, 0.5, 7, formats=formats, tile=128).pack().to("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m", [4, 300])
def test_kernel_in_cuda_graph_without_sync_gpu(layout, m):
    packed = gpu_packed(layout)
    bias = torch.randn(1000, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, 1500, device="cuda", dtype=torch.bfloat16)
    kernels.matmul(x, layout, packed.tensors, packed.dims, bias)  # compile outside the graph
    torch.cuda.set_sync_debug_mode("error")
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = kernels.matmul(x, layout, packed.tensors, packed.dims, bias)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    x.copy_(torch.randn_like(x))
    graph.replay()
    assert_matches_reference(out, x, packed, bias)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nv24", "bsr_int4", "hybrid"])
def test_kernel_through_torch_compile_gpu(layout):
    from sparc.codegen import ops  # noqa: F401  (registers sparc::linear)

    packed = gpu_packed(layout)
    weights = list(packed.tensors)

    def linear(x):
        return torch.ops.sparc.linear(x, weights, None, layout, packed.dims) * 2

    compiled = torch.compile(linear, fullgraph=True, mode="reduce-overhead")
    for m in (1, 7, 16):
        x = torch.randn(m, 1500, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            assert_matches_reference(compiled(x) / 2, x, packed, None)


@pytest.mark.parametrize("layout", kernels.decode.LAYOUTS)
@pytest.mark.parametrize("m", [1, 5, 16])
def test_decode_runs_the_streaming_kernels(layout, m, monkeypatch):
    """M == 1 goes through `decode` (whole groups per K block, every group size), larger M through the tile
    kernels."""
    calls = []
    run = kernels.decode.matmul
    monkeypatch.setattr(kernels.decode, "matmul", lambda *a, **kw: calls.append(m) or run(*a, **kw))
    for group in (32, 64, 128):
        case = make_case(layout, 48, 600, torch.bfloat16, group, 0.6, group + m, block_n=32)
        check_kernel(case, m, None, True)
    assert calls == ([1] * 3 if m == 1 else [])
    check_kernel(make_case(layout, 20, 70, torch.float32, 32, 0.6, 5), 17, None, False)
    assert len(calls) == (3 if m == 1 else 0)


def test_fp32_and_fp16_nv24_decode_takes_the_tile_kernel():
    """The NV24 decode kernel reads bf16 bit patterns; other value dtypes take the tile kernel (on the CPU; on
    the GPU fp16 takes `nv24_mma`)."""
    x = torch.randn(1, 64)
    assert kernels.tuning.kernel_for("nv24", x)[0] == "tile"
    assert kernels.tuning.kernel_for("nv24", x.half())[0] == "tile"
    assert kernels.tuning.kernel_for("nv24", x.bfloat16())[0] == "decode"
    assert kernels.tuning.kernel_for("int4", x)[0] == "decode"


REBUILT = [("nv24", {}), ("int4", {}), ("nv24_int4", {}), ("dense", {}), ("bsr_int4", {"block_n": 32}),
           ("hybrid", {"formats": np.array([[0, 1, 2], [3, 4, 1]], dtype=np.uint8), "tile": 64})]


@pytest.mark.parametrize("layout, options", REBUILT, ids=[r[0] for r in REBUILT])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_large_m_rebuilds_the_weight_once_and_calls_the_dense_product(layout, options, dtype):
    """From M = REBUILD_MIN_M on the default tile config rebuilds the weight exactly as the tile kernels do (the
    packed weight unpacked, rounded to the activation dtype) and runs one dense matmul; below, the tile kernel."""
    case = make_case(layout, 100, 150, dtype, 32, 0.6, 7, **options)
    packed = case.pack()
    m = kernels.rebuild.REBUILD_MIN_M
    x = torch.randn(m, 150, dtype=dtype)
    assert kernels.kernel_name(x, layout, packed.tensors, packed.dims) == "rebuild"
    assert kernels.kernel_name(x[: m - 1], layout, packed.tensors, packed.dims) == "tile"
    rebuilt = kernels.rebuild.rebuild(layout, list(packed.tensors), packed.dims, dtype, x.device)
    assert torch.equal(rebuilt, kernels.unpack(packed).to(dtype))
    check_kernel(case, m, None, True)


def test_the_tuner_weighs_the_rebuild_against_the_tile_configs():
    """Large-M candidates include the rebuild for every format it supports; the zero layout keeps the tile
    kernel (it stores nothing to rebuild)."""
    for m in (65, 256, 2048):
        assert kernels.rebuild.CONFIG in kernels.tuning.candidates("tile", "int4", m)
    assert kernels.rebuild.CONFIG not in kernels.tuning.candidates("tile", "int4", 64)
    assert kernels.rebuild.CONFIG not in kernels.tuning.candidates("tile", "zero", 2048)
    assert not kernels.tuning.default("tile", "zero", 2048).rebuild


@pytest.mark.parametrize("kinds, decoded", [([0, 1, 4], True), ([0], True), ([4], True), ([0, 2, 1], False)])
def test_hybrid_decode_kernel_for_dense_nv24_zero_grids(kinds, decoded):
    """M == 1 bf16 hybrids of DENSE / NV24 / ZERO tiles run `decode.hybrid_decode_kernel` (any split), others the
    tile kernel; both match the reference."""
    for seed, (n, k, tile, split) in enumerate([(130, 300, 64, None), (200, 256, 128, 2), (70, 131, 64, 3)]):
        grid = (-(-n // tile), -(-k // tile))
        formats = np.random.default_rng(seed).choice(kinds, size=grid).astype(np.uint8)
        case = make_case("hybrid", n, k, torch.bfloat16, 32, 0.6, seed, formats=formats, tile=tile)
        packed = case.pack()
        x = torch.randn(1, k, dtype=torch.bfloat16)
        assert (kernels.tuning.kernel_for("hybrid", x, packed.tensors)[0] == "decode") == decoded
        check_kernel(case, 1, split, True)


@pytest.mark.parametrize("block_k", [16, 32, 64])
def test_hybrid_blocks_smaller_than_the_tile(block_k):
    """A tile-kernel config whose K block is smaller than the tile (raised to whole quantization groups)."""
    formats = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.uint8)
    case = make_case("hybrid", 120, 150, torch.bfloat16, 32, 0.6, block_k, formats=formats, tile=64)
    packed = case.pack()
    x = torch.randn(20, 150, dtype=torch.bfloat16)
    config = kernels.hybrid.Config(16, 32, block_k, 2)
    out = kernels.triton_matmul(x, "hybrid", packed.tensors, packed.dims, None, config=config)
    assert_matches_reference(out, x, packed, None)
