"""The per-GPU launch-config table: keys, file names, lookup, tuning (with a fake timer) and the rules that keep
tuning away from the interpreter and from run time."""
import dataclasses
import json
import re
import sys

import numpy as np
import pytest
import torch

from sparc.ir import TileFormat
from sparc import kernels
from sparc.errors import SparcError
from sparc.kernels import (autotune, decode, hybrid, hybrid_mma, hybrid_wgmma, int4_wgmma, nv24_mma, pack, rebuild,
                           sparse_wgmma, tuning)
from test_kernels import make_case


@dataclasses.dataclass(frozen=True)
class Fake:
    a: int
    b: int = 0


@pytest.fixture(autouse=True)
def fresh_tables(monkeypatch):
    monkeypatch.setattr(autotune, "_TUNED", set())
    monkeypatch.setattr(autotune, "_CHOSEN", {})
    autotune._read.cache_clear()
    yield
    autotune._read.cache_clear()


@pytest.mark.parametrize("m, bucket", [(1, 1), (2, 16), (16, 16), (17, 64), (64, 64), (65, 256), (300, 2048),
                                       (2048, 2048), (100000, 2048)])
def test_m_bucket(m, bucket):
    assert autotune.m_bucket(m) == bucket
    assert autotune.config_key("tile", "int4", 14336, 4096, m) == f"tile/int4/14336x4096/m{bucket}"


def test_device_file_names(tmp_path):
    assert autotune.device_file("NVIDIA H100 80GB HBM3").name == "NVIDIA_H100_80GB_HBM3.json"
    assert autotune.device_file("NVIDIA H100 80GB HBM3").parent == autotune.CONFIG_DIR
    assert autotune.device_file(" A/B--c ", tmp_path) == tmp_path / "A_B_c.json"


def test_store_then_lookup_keeps_other_keys(tmp_path):
    path = tmp_path / "GPU.json"
    assert autotune.lookup(path, "k1") is None
    autotune.store(path, "k2", {"a": 2}, "GPU")
    autotune.store(path, "k1", {"a": 1, "b": 3}, "GPU")
    assert autotune.lookup(path, "k1") == {"a": 1, "b": 3}
    assert autotune.lookup(path, "k2") == {"a": 2}
    table = json.loads(path.read_text())
    assert table["device"] == "GPU" and list(table["configs"]) == ["k1", "k2"]


def test_fastest_skips_failing_candidates():
    times = {1: 3.0, 2: 1.5, 3: 2.0}

    def run(config):
        if config.a == 4:
            raise RuntimeError("out of shared memory")
        return config.a

    seen = []
    best, best_time = autotune.fastest([Fake(a) for a in (1, 4, 2, 3)], run, lambda fn: times[fn()],
                                       lambda c, t: seen.append((c.a, t)))
    assert (best, best_time) == (Fake(2), 1.5)
    assert seen == [(1, 3.0), (4, "refused"), (2, 1.5), (3, 2.0)]


def test_fastest_never_takes_a_candidate_whose_output_is_wrong():
    """The fastest candidate gives a wrong output: the next fastest right one is taken; the wrong one is not
    even timed."""
    times, timed, seen = {1: 3.0, 2: 1.0, 3: 2.0}, [], []

    def bench(fn):
        timed.append(fn())
        return times[timed[-1]]
    best, best_time = autotune.fastest([Fake(a) for a in (1, 2, 3)], lambda c: c.a, bench,
                                       lambda c, t: seen.append((c.a, t)), check=lambda c: c.a != 2)
    assert (best, best_time) == (Fake(3), 2.0)
    assert seen == [(1, 3.0), (2, "wrong"), (3, 2.0)] and timed == [1, 3]


def test_tuning_refuses_a_product_no_config_gets_right(monkeypatch, tmp_path, capsys, caplog):
    """Every candidate ran and none matched the reference: an error that names the key, nothing written, and
    the tuning line shows each one's fate; some wrong ones beside a right one are logged by name."""
    path = fake_cuda(monkeypatch, tmp_path)
    monkeypatch.setenv("SPARC_AUTOTUNE", "1")
    device = torch.device("cuda", 0)
    with pytest.raises(SparcError, match="mma/nv24/64x64/m16.*no launch config gave the right output"):
        autotune.select("mma/nv24/64x64/m16", Fake(1), [Fake(2)], lambda c: c.a, device, directory=tmp_path,
                        bench=lambda fn: 1.0, check=lambda c: False)
    assert "[wrong wrong]" in capsys.readouterr().err and not path.exists()
    with caplog.at_level("WARNING", logger="sparc"):
        chosen = autotune.select("k", Fake(1), [Fake(2)], lambda c: c.a, device, directory=tmp_path,
                                 bench=lambda fn: 1.0, check=lambda c: c.a == 1)
    assert chosen == Fake(1) and "Fake(a=2, b=0)" in caplog.text and autotune.lookup(path, "k") == {"a": 1, "b": 0}
    autotune._device_table.cache_clear()


def test_select_off_cuda_or_interpreted_returns_the_default_without_running(monkeypatch):
    monkeypatch.setenv("SPARC_AUTOTUNE", "1")
    ran = []
    assert autotune.select("k", Fake(1), [Fake(2)], ran.append, torch.device("cpu")) == Fake(1)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not autotune.tuning_requested()
    assert autotune.select("k", Fake(1), [Fake(2)], ran.append, torch.device("cuda", 0)) == Fake(1)
    assert ran == []


def fake_cuda(monkeypatch, tmp_path, capturing=False):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing)
    autotune._device_table.cache_clear()
    return tmp_path / "Fake_GPU.json"


def test_select_reads_the_table_without_tuning(monkeypatch, tmp_path):
    path = fake_cuda(monkeypatch, tmp_path)
    monkeypatch.delenv("SPARC_AUTOTUNE", raising=False)
    autotune.store(path, "k", {"a": 7, "b": 1}, "Fake GPU")
    ran = []
    device = torch.device("cuda", 0)
    assert autotune.select("k", Fake(1), [Fake(2)], ran.append, device, directory=tmp_path) == Fake(7, 1)
    assert autotune.select("other", Fake(1), [Fake(2)], ran.append, device, directory=tmp_path) == Fake(1)
    assert ran == []
    autotune._device_table.cache_clear()


@pytest.mark.parametrize("key, expected", [
    ("mma/nv24/3584x3584/m16", "mma/nv24/4096x4096/m16"),  # nearer than 5000x3000
    ("mma/nv24/18944x3584/m16", "mma/nv24/14336x4096/m16"),
    ("mma/nv24/2048x2048/m16", "mma/nv24/4096x4096/m16"),  # a factor of 2 in both
    ("mma/nv24/2047x4096/m16", None),  # past a factor of 2 in N
    ("mma/nv24/4096x4096/m64", None),  # another M bucket
    ("mma/nv24_int4/4096x4096/m16", None),  # another layout
    ("decode/nv24/4096x4096/m16", None),  # another kernel
    ("mma/hybrid-dense30/4000x4000/m16", "mma/hybrid-dense30/4096x4096/m16"),  # the mix is part of the layout
])
def test_nearest_key_takes_the_closest_shape_of_the_same_kernel_layout_and_bucket(key, expected):
    configs = {"mma/nv24/4096x4096/m16": {}, "mma/nv24/5000x3000/m16": {}, "mma/nv24/14336x4096/m16": {},
               "mma/nv24/4096x4096/m256": {}, "mma/hybrid-dense30/4096x4096/m16": {},
               "mma/hybrid-dense100/4000x4000/m16": {}}
    assert autotune.nearest_key(configs, key) == expected


def test_select_gives_an_untuned_shape_the_nearest_tuned_config_and_logs_it(monkeypatch, tmp_path, caplog):
    path = fake_cuda(monkeypatch, tmp_path)
    monkeypatch.delenv("SPARC_AUTOTUNE", raising=False)
    autotune.store(path, "mma/nv24/4096x4096/m16", {"a": 7, "b": 1}, "Fake GPU")
    autotune.store(path, "mma/nv24/1024x1024/m16", {"a": 8, "b": 1}, "Fake GPU")
    device = torch.device("cuda", 0)
    with caplog.at_level("INFO", logger="sparc"):
        for _ in range(2):
            assert autotune.select("mma/nv24/3584x3584/m16", Fake(1), [Fake(2)], None, device,
                                   directory=tmp_path) == Fake(7, 1)
        assert autotune.select("mma/nv24/640x4096/m16", Fake(1), [Fake(2)], None, device,
                               directory=tmp_path) == Fake(1)  # N within 2x of 1024 but K 4x
    assert [r.getMessage() for r in caplog.records] == [
        "sparc: mma/nv24/3584x3584/m16 has no tuned config on Fake GPU; it takes mma/nv24/4096x4096/m16's "
        "(SPARC_AUTOTUNE=1 tunes it)"]
    autotune._device_table.cache_clear()


def test_select_tunes_once_and_writes_the_table(monkeypatch, tmp_path, capsys):
    path = fake_cuda(monkeypatch, tmp_path)
    monkeypatch.setenv("SPARC_AUTOTUNE", "1")
    ran = []
    bench = {1: 5.0, 2: 4.0, 3: 1.0}

    def run(config):
        ran.append(config.a)
        return config.a

    device = torch.device("cuda", 0)
    chosen = autotune.select("k", Fake(1), [Fake(2), Fake(3)], run, device, directory=tmp_path,
                             bench=lambda fn: bench[fn()])
    assert chosen == Fake(3) and ran == [1, 2, 3]
    assert autotune.lookup(path, "k") == {"a": 3, "b": 0}
    assert "k" in capsys.readouterr().err
    again = autotune.select("k", Fake(1), [Fake(2), Fake(3)], run, device, directory=tmp_path,
                            bench=lambda fn: bench[fn()])
    assert again == Fake(3) and ran == [1, 2, 3]
    autotune._device_table.cache_clear()


def test_select_never_tunes_while_a_graph_is_captured(monkeypatch, tmp_path):
    fake_cuda(monkeypatch, tmp_path, capturing=True)
    monkeypatch.setenv("SPARC_AUTOTUNE", "1")
    ran = []
    assert autotune.select("k", Fake(1), [Fake(2)], ran.append, torch.device("cuda", 0), directory=tmp_path,
                           bench=lambda fn: 1.0) == Fake(1)
    assert ran == [] and not (tmp_path / "Fake_GPU.json").exists()
    autotune._device_table.cache_clear()


def test_shipped_tables_hold_valid_configs():
    """Every entry of every table in the package builds its kernel's config, for a known layout and bucket."""
    classes = {"decode": decode.Config, "tile": hybrid.Config, "wgmma": int4_wgmma.Config}
    tables = list(autotune.CONFIG_DIR.glob("*.json"))
    assert tables
    for path in tables:
        for key, fields in json.loads(path.read_text())["configs"].items():
            kernel, layout, shape, bucket = key.split("/")
            assert layout in ("int4", "nv24", "nv24_int4", "bsr_int4", "hybrid", "dense") or (
                kernel in ("decode", "mma") and re.fullmatch(r"hybrid-dense(0|[1-9]0|100)", layout))
            assert int(bucket[1:]) in autotune.M_BUCKETS and len(shape.split("x")) == 2
            own = [tuning.MMA[layout.split("-")[0]].Config] if kernel == "mma" else [classes[kernel]]
            default = tuning.default(kernel, layout.split("-")[0], 2)
            on_wgmma = kernel == "mma" and (layout.startswith("hybrid") or layout in ("nv24", "nv24_int4"))
            variants = [hybrid_wgmma.Config(16, 64), sparse_wgmma.Config(16, 64, 3)] if on_wgmma else []
            config = autotune.config_from(key, fields, [default, *variants, rebuild.CONFIG])
            kinds = own + [type(variant) for variant in variants]
            assert config == rebuild.CONFIG if fields.get("rebuild") else type(config) in kinds


def test_an_entry_needs_every_field_its_config_lacks_a_default_for():
    """A `hybrid_wgmma` entry (no block_k) is no tile-kernel config, though its fields are a subset of one's."""
    fields = dataclasses.asdict(hybrid_wgmma.Config(64, 128))
    configs = [hybrid_mma.default("hybrid", 64), rebuild.CONFIG]
    with pytest.raises(SparcError, match="SPARC_AUTOTUNE=1"):
        autotune.config_from("mma/hybrid-dense100/4096x4096/m64", fields, configs)
    assert autotune.config_from("mma/hybrid-dense100/4096x4096/m64", fields,
                                [*configs, hybrid_wgmma.Config(16, 64)]) == hybrid_wgmma.Config(64, 128)


def test_a_nearby_entry_this_product_cannot_run_leaves_the_default(monkeypatch, tmp_path, caplog):
    """A nearby shape's `hybrid_wgmma` entry, taken by a shape that kernel cannot run (K no multiple of 128:
    its configs are no candidates there), gives the default, and says so once."""
    path = fake_cuda(monkeypatch, tmp_path)
    monkeypatch.delenv("SPARC_AUTOTUNE", raising=False)
    autotune.store(path, "mma/hybrid-dense100/4096x4096/m64", dataclasses.asdict(hybrid_wgmma.Config(64, 128)),
                   "Fake GPU")
    default, device = hybrid_mma.default("hybrid", 64), torch.device("cuda", 0)
    runnable = [*hybrid_mma.candidates("hybrid", 64), *hybrid_wgmma.candidates(64)]
    with caplog.at_level("INFO", logger="sparc"):
        for _ in range(2):
            assert autotune.select("mma/hybrid-dense100/4000x4000/m64", default, hybrid_mma.candidates("hybrid", 64),
                                   None, device, directory=tmp_path) == default
        assert autotune.select("mma/hybrid-dense100/4096x3968/m64", default, runnable, None, device,
                               directory=tmp_path) == hybrid_wgmma.Config(64, 128)
    assert [r.getMessage() for r in caplog.records] == [
        "sparc: mma/hybrid-dense100/4000x4000/m64 has no tuned config on Fake GPU, and "
        "mma/hybrid-dense100/4096x4096/m64's is not one this product runs: it takes the default (SPARC_AUTOTUNE=1 "
        "tunes it)",
        "sparc: mma/hybrid-dense100/4096x3968/m64 has no tuned config on Fake GPU; it takes "
        "mma/hybrid-dense100/4096x4096/m64's (SPARC_AUTOTUNE=1 tunes it)"]
    autotune._device_table.cache_clear()


def test_a_table_entry_builds_the_config_type_that_has_its_fields(monkeypatch, tmp_path):
    """A tensor-core kernel's key may hold its own config or the rebuild's; fields no candidate takes are an
    error that says how to retune."""
    fake_cuda(monkeypatch, tmp_path)
    monkeypatch.delenv("SPARC_AUTOTUNE", raising=False)
    own = nv24_mma.Config(128, 2, 8, 1, 128)
    default, candidates = nv24_mma.default("nv24", 100), tuning.candidates("mma", "nv24", 100)
    assert own in candidates and rebuild.CONFIG in candidates
    device = torch.device("cuda", 0)
    for key, config in (("own", own), ("rebuilt", rebuild.CONFIG)):
        autotune.store(tmp_path / "Fake_GPU.json", key, dataclasses.asdict(config), "Fake GPU")
        assert autotune.select(key, default, candidates, None, device, directory=tmp_path) == config
    autotune.store(tmp_path / "Fake_GPU.json", "stale", {"block_n": 64, "stages": 3}, "Fake GPU")
    with pytest.raises(SparcError, match="stale.*SPARC_AUTOTUNE=1"):
        autotune.select("stale", default, candidates, None, device, directory=tmp_path)
    autotune._device_table.cache_clear()


@pytest.mark.parametrize("kernel, layout", [("mma", "nv24"), ("mma", "nv24_int4"), ("mma", "hybrid"),
                                            ("mma", "bsr_int4"), ("wgmma", "int4"), ("tile", "nv24")])
def test_every_tuner_weighs_the_rebuild_past_64_rows(kernel, layout):
    for m in (2, 16, 64):
        assert rebuild.CONFIG not in tuning.candidates(kernel, layout, m)
    for m in (65, 128, 256):
        assert rebuild.CONFIG in tuning.candidates(kernel, layout, m)


def test_a_rebuild_config_runs_the_rebuild_whatever_the_kernel():
    assert tuning.runner(nv24_mma.matmul, rebuild.CONFIG) is tuning.run_rebuilt
    assert tuning.runner(nv24_mma.matmul, nv24_mma.Config(64)) is nv24_mma.matmul
    weight = torch.randn(24, 40)
    packed = pack("nv24", weight, torch.tensor([1.0, 0.0, 1.0, 0.0]).repeat(24, 10), torch.float32, 32)
    x = torch.randn(70, 40)
    out = kernels.triton_matmul(x, "nv24", packed.tensors, packed.dims, None, config=rebuild.CONFIG)
    torch.testing.assert_close(out, x @ kernels.unpack(packed).T)


@pytest.mark.parametrize("layout, m", [("nv24", 1), ("bsr_int4", 5), ("hybrid", 3)])
def test_the_tuners_check_passes_a_right_output_and_fails_a_wrong_one(layout, m, monkeypatch):
    """`matches_reference` on fresh random inputs: the kernel's own output passes; the same output with one
    element off by 5% of its scale fails, and so does one NaN."""
    case = make_case(layout, 40, 256, torch.float32, 128, 0.5, int(torch.randint(0, 1000, ())),
                     formats=np.array([[int(TileFormat.NV24), int(TileFormat.DENSE)]], dtype=np.uint8), tile=128)
    packed, x, bias = case.pack(), torch.randn(m, 256), torch.randn(40)
    kernel, matmul = tuning.kernel_for(layout, x, packed.tensors)
    config = tuning.default(kernel, layout, m)
    assert tuning.matches_reference(kernel, layout, x, packed.tensors, packed.dims, bias)(config)
    weight = kernels.unpack(packed)
    for spoil in (lambda out: out[0, 3].add_(0.05 * float(x[0].abs() @ weight[3].abs() + bias[3].abs())),
                  lambda out: out[-1, -1].fill_(float("nan"))):
        def spoiled(*args, **kwargs):
            out = matmul(*args, **kwargs)
            spoil(out)
            return out
        monkeypatch.setattr(sys.modules[matmul.__module__], "matmul", spoiled)
        assert not tuning.matches_reference(kernel, layout, x, packed.tensors, packed.dims, bias)(config)
        monkeypatch.undo()


@pytest.mark.parametrize("kernel, layout, m", [("decode", "int4", 1), ("decode", "bsr_int4", 1), ("tile", "nv24", 16),
                                               ("tile", "hybrid", 64), ("tile", "int4", 2048),
                                               ("mma", "int4", 16)])
def test_candidates_are_of_the_kernels_config_type(kernel, layout, m):
    default = tuning.default(kernel, layout, m)
    candidates = tuning.candidates(kernel, layout, m)
    assert candidates and all(type(c) is type(default) for c in candidates)


@pytest.mark.parametrize("dtype, block_k, expected", [(torch.bfloat16, 256, (128, 3)), (torch.float32, 32, (128, 3)),
                                                      (torch.float32, 64, (128, 2)), (torch.float32, 128, (128, 1)),
                                                      (torch.float32, 256, (64, 1)), (torch.float32, 512, (32, 1))])
def test_fp32_tile_configs_are_fitted_to_shared_memory(dtype, block_k, expected):
    """With fp32 activations stages, then rows, shrink until the staged x tiles fit; 16-bit ones keep the
    tuned config."""
    config = hybrid.Config(128, 128, 64, 1, 8, 3)
    x = torch.empty(300, 8, dtype=dtype)
    block_m, stages = hybrid.fit_shared(config, 128, block_k, x)
    assert (block_m, stages) == expected
    if dtype == torch.float32:
        assert stages * block_m * block_k * 4 <= hybrid.FP32_STAGED_BYTES


@pytest.mark.parametrize("row_programs, k_steps, sms, expected", [
    (64, 4, 132, 4),      # 1024 x 4096 INT4, 16 rows and 1024 inputs a program: one K block a slice
    (64, 16, 132, 4),     # 264 // 64 programs
    (256, 4, 132, 1),     # 4096 rows already fill 132 SMs twice
    (896, 14, 132, 1),
    (8, 100, 132, 33),
    (10, 1, 132, 1),      # never more slices than K blocks
])
def test_fill_split_brings_the_grid_to_two_programs_per_sm(row_programs, k_steps, sms, expected):
    assert decode.fill_split(row_programs, k_steps, sms) == expected


def test_a_filling_split_runs_one_slice_on_the_cpu(monkeypatch):
    """split_k = 0 (HYBRID's default) resolves to one slice off the GPU: no partials, no reduction kernel."""
    assert {layout: config.split_k for layout, config in decode.DEFAULTS.items()} == {
        "int4": 1, "nv24": 1, "nv24_int4": 1, "bsr_int4": 4, "hybrid": 0}
    seen = []
    monkeypatch.setattr(decode, "launch", lambda kernel, x, n, k, bias, tiling, *rest: seen.append(tiling))
    packed = pack("int4", torch.randn(64, 256), torch.ones(64, 256, dtype=torch.bool), torch.float32, 128)
    config = dataclasses.replace(decode.DEFAULTS["int4"], split_k=0)
    decode.matmul(torch.randn(1, 256), "int4", packed.tensors, packed.dims, None, config)
    assert seen[0].split_k == 1 and seen[0].block_n == 16


@pytest.mark.parametrize("dense_tiles, expected", [(0, "hybrid-dense0"), (3, "hybrid-dense30"),
                                                   (10, "hybrid-dense100"), (19, "hybrid-dense90")])
def test_hybrid_decode_configs_are_keyed_by_the_tile_mix(dense_tiles, expected):
    """The DENSE share of a HYBRID grid, read from its buffers, picks the decode kernel's table entry (100%
    only without NV24 tiles: 19 DENSE tiles of 20 are 90%); other kernels and layouts keep their own name."""
    tiles = 20 if dense_tiles > 10 else 10
    formats = np.array([[TileFormat.DENSE] * dense_tiles + [TileFormat.NV24] * (tiles - dense_tiles)],
                       dtype=np.uint8)
    weight = torch.randn(128, 128 * tiles)
    mask = torch.ones(128, 128 * tiles, dtype=torch.bool)
    mask[:, 1::2] = False  # 2:4 everywhere, so that the NV24 tiles can hold it
    packed = pack("hybrid", weight, mask, torch.bfloat16, 128, formats=formats, tile=128)
    assert tuning.tuned_layout("decode", "hybrid", packed.tensors, packed.dims) == expected
    assert tuning.tuned_layout("tile", "hybrid", packed.tensors, packed.dims) == "hybrid"
    assert tuning.tuned_layout("decode", "int4", packed.tensors, packed.dims) == "int4"
