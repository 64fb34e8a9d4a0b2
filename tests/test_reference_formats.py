"""Reference pack / unpack / matmul for DENSE, NV24, INT4 (groups 32/64/128), NV24_INT4 and ZERO."""
import pytest
import torch

from sparc.kernels import pack, reference_matmul, unpack
from sparc.kernels.int4 import dequantize, quantize
from sparc.planners.masks import mask_2of4

SHAPES = [(16, 32), (37, 90), (64, 130), (5, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lossless_formats_unpack_to_the_masked_weight(shape, dtype):
    torch.manual_seed(sum(shape))
    weight = torch.randn(shape).to(dtype).float()
    for layout, mask in (("dense", torch.rand(shape) > 0.4), ("nv24", mask_2of4(torch.rand(shape))),
                         ("nv24", torch.zeros(shape, dtype=torch.bool))):
        packed = pack(layout, weight, mask, dtype)
        assert torch.equal(unpack(packed).float(), weight * mask), layout


def test_nv24_refuses_a_mask_that_is_not_2_of_4():
    from sparc.errors import SparcError
    mask = torch.ones(4, 8, dtype=torch.bool)
    with pytest.raises(SparcError, match="2:4"):
        pack("nv24", torch.randn(4, 8), mask, torch.float32)


@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_is_within_half_a_step(group, shape, dtype):
    torch.manual_seed(group + shape[1])
    weight, mask = torch.randn(shape), torch.rand(shape) > 0.3
    packed = pack("int4", weight, mask, dtype, group)
    scales = packed.tensors[1].float().repeat_interleave(group, 1)[:, : shape[1]]
    error = (unpack(packed).float() - weight * mask).abs()
    assert (error <= scales / 2 + 1e-2 * (weight * mask).abs() * (dtype != torch.float32) + 1e-6).all()
    assert packed.tensors[0].dtype == torch.uint8 and packed.tensors[0].shape[1] == -(-shape[1] // group) * group // 2


def test_int4_is_exact_on_a_4bit_grid():
    torch.manual_seed(0)
    q = torch.randint(0, 16, (8, 64)).float()
    q[:, ::32] = 0
    q[:, 1::32] = 15  # every group spans the whole grid
    weight = q * 0.125 - 1.0
    packed = pack("int4", weight, torch.ones_like(weight, dtype=torch.bool), torch.float32, 32)
    assert torch.equal(unpack(packed), weight)


def test_nv24_int4_unpacks_to_quantized_kept_values():
    torch.manual_seed(1)
    weight = torch.randn(24, 200)
    mask = mask_2of4(weight.abs())
    packed = pack("nv24_int4", weight, mask, torch.float32, 32)
    restored = unpack(packed)
    assert not restored[~mask].any()
    step = (weight.abs().max() * 2 / 15).item()
    assert (restored - weight * mask).abs().max() <= step / 2 + 1e-6


@pytest.mark.parametrize("layout,group", [("dense", 0), ("nv24", 0), ("int4", 64), ("nv24_int4", 32), ("zero", 0)])
def test_reference_matmul_is_x_times_unpacked_weight(layout, group):
    torch.manual_seed(2)
    weight, bias, x = torch.randn(40, 72), torch.randn(40), torch.randn(3, 5, 72)
    mask = mask_2of4(torch.rand(40, 72)) if "nv24" in layout else torch.rand(40, 72) > 0.5
    packed = pack(layout, weight, mask, torch.float32, group)
    expected = x @ unpack(packed).float().T + bias
    actual = reference_matmul(x, layout, packed.tensors, packed.dims, bias)
    assert torch.allclose(actual, expected, atol=1e-5)
    if layout == "zero":
        assert torch.equal(actual, bias.expand(3, 5, 40))


def test_packed_bytes_per_weight():
    weight, ones = torch.randn(256, 512), torch.ones(256, 512, dtype=torch.bool)
    per_weight = {layout: pack(layout, weight, mask_2of4(weight.abs()) if "nv24" in layout else ones,
                               torch.bfloat16, 128).nbytes / weight.numel()
                  for layout in ("dense", "nv24", "int4", "nv24_int4", "zero")}
    assert per_weight == {"dense": 2.0, "nv24": 1.125, "int4": 0.53125, "nv24_int4": 0.390625, "zero": 0.0}


def test_quantize_dequantize_round_trip_shapes():
    q, scales, mins = quantize(torch.randn(3, 100), 32, torch.float32)
    assert q.shape == (3, 128) and scales.shape == (3, 4) and dequantize(q, scales, mins, 32).shape == (3, 128)
