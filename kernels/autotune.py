"""Launch configurations per GPU: a JSON table per device name, read at run time, retuned with SPARC_AUTOTUNE=1.

`configs/<device name>.json` (the name with every run of other characters than letters and digits turned into
one '_', e.g. NVIDIA_H100_80GB_HBM3.json) maps a key "<kernel>/<layout>/<N>x<K>/m<bucket>" to the fields of that
kernel's config dataclass; the bucket is the smallest of M_BUCKETS at least M (the last one past it). At run
time `select` looks the key up; a shape the table lacks takes the config of the nearest tuned shape of the same
kernel, layout and M bucket, N and K each within NEAREST_FACTOR (logged once), else the kernel's default: no
tuning, no timing, no host sync.
With SPARC_AUTOTUNE=1 on a CUDA device, the first call of a key in a process times every candidate config on
the call's own inputs (`graph_bench` over copies of the weight, see `tuning.timed_run`), keeps the fastest of
those whose output matches the reference (`tuning.matches_reference`) and writes the table back, printing each
candidate's time to stderr ("refused" where the compiler or the device refused it, "wrong" where its output did
not match). Never under the Triton interpreter (TRITON_INTERPRET=1), never while a CUDA graph is being captured.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch

from sparc.errors import SparcError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
M_BUCKETS = (1, 16, 64, 256, 2048)
NEAREST_FACTOR = 2  # a tuned shape's config serves shapes whose N and K are each within this factor of its own
_TUNED: set[tuple[Path, str]] = set()  # (table, key) tuned by this process
_CHOSEN: dict[tuple[int, str], object] = {}  # (device index, key) -> config, so a call costs one dict lookup
log = logging.getLogger("sparc")


def m_bucket(m: int) -> int:
    return next((b for b in M_BUCKETS if m <= b), M_BUCKETS[-1])


def config_key(kernel: str, layout: str, n: int, k: int, m: int) -> str:
    return f"{kernel}/{layout}/{n}x{k}/m{m_bucket(m)}"


def shape_of(key: str) -> tuple[str, int, int] | None:
    """(the key without its shape, N, K) of a key "<kernel>/<layout>/<N>x<K>/m<bucket>"; None for other keys."""
    match = re.fullmatch(r"([^/]+/[^/]+)/(\d+)x(\d+)/(m\d+)", key)
    return match and (f"{match[1]}/{match[4]}", int(match[2]), int(match[3]))


def nearest_key(configs, key: str) -> str | None:
    """The key among `configs` of key's kernel, layout and M bucket whose shape is nearest key's (the least
    |log(N' / N)| + |log(K' / K)|), of those with N' and K' each within NEAREST_FACTOR of N and K; None if none."""
    own = shape_of(key)
    if own is None or 0 in own[1:]:
        return None
    near = []
    for other in configs:
        shape = shape_of(other)
        if shape and shape[0] == own[0]:
            gaps = [abs(math.log(size / wanted)) for size, wanted in zip(shape[1:], own[1:])]
            if max(gaps) <= math.log(NEAREST_FACTOR):
                near.append((sum(gaps), other))
    return min(near)[1] if near else None


def device_file(device_name: str, directory: Path | None = None) -> Path:
    return (directory or CONFIG_DIR) / (re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_") + ".json")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tuning_requested() -> bool:
    return os.environ.get("SPARC_AUTOTUNE", "0") not in ("", "0") and not interpreting()


@functools.cache
def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text()).get("configs", {})
    except FileNotFoundError:
        return {}


def lookup(path: Path, key: str) -> dict | None:
    return _read(path).get(key)


def store(path: Path, key: str, fields: dict, device_name: str) -> None:
    """Write `fields` under `key` into the table at `path` (other keys kept, keys sorted)."""
    configs = dict(_read(path))
    configs[key] = fields
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device_name, "configs": dict(sorted(configs.items()))}, indent=1) + "\n")
    _read.cache_clear()


def fastest(candidates: Sequence, run: Callable, bench: Callable[[Callable[[], object]], float], log=None,
            check: Callable | None = None):
    """(config, time) of the candidate whose run(config) `bench` times lowest, of those `check(config)` passes;
    candidates that fail are skipped. `log(config, outcome)` sees every candidate: its time, "refused" or
    "wrong"."""
    best, best_time = None, math.inf
    for config in candidates:
        try:
            outcome = "wrong" if check and not check(config) else bench(lambda: run(config))
        except Exception:  # a config the compiler or the device refuses (shared memory, registers)
            outcome = "refused"
        if log:
            log(config, outcome)
        if not isinstance(outcome, str) and outcome < best_time:
            best, best_time = config, outcome
    return best, best_time


def graph_bench(fn, replays: int = 10) -> float:
    """Median milliseconds of fn() replayed in a CUDA graph (no launch overhead), after a compiling call."""
    fn()
    current, side = torch.cuda.current_stream(), torch.cuda.Stream()
    side.wait_stream(current)
    with torch.cuda.stream(side):
        fn()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


@functools.cache
def _device_table(index: int, directory: Path | None) -> tuple[str, Path]:
    name = torch.cuda.get_device_name(index)
    return name, device_file(name, directory)


def select(key: str, default, candidates: Sequence, run: Callable, device: torch.device, *, directory=None,
           bench: Callable | None = None, check: Callable | None = None):
    """The config for `key` on `device`: the tuned table's, else `default`; tuned first when requested.
    `run(config)` runs the product (tuning times it with `bench`, by default `graph_bench`); `check(config)`
    tells whether the config's output is right (see `tune`)."""
    if device.type != "cuda" or interpreting():
        return default
    index = device.index if device.index is not None else torch.cuda.current_device()
    chosen = _CHOSEN.get((index, key))
    if chosen is not None:
        return chosen
    name, path = _device_table(index, directory)
    if tuning_requested() and (path, key) not in _TUNED and not torch.cuda.is_current_stream_capturing():
        _TUNED.add((path, key))
        best = tune(key, [default, *candidates], run, bench or graph_bench, check)
        if best is not None:
            store(path, key, dataclasses.asdict(best), name)
            _CHOSEN[index, key] = best
            return best
    fields = lookup(path, key)
    if fields is not None:
        _CHOSEN[index, key] = config_from(key, fields, [default, *candidates])
    else:
        _CHOSEN[index, key] = nearest_config(key, default, candidates, path, name)
    return _CHOSEN[index, key]


def tune(key: str, configs: Sequence, run: Callable, bench: Callable, check: Callable | None):
    """The fastest of `configs` whose output `check` passes, None if none ran; each one's time or fate printed.
    A config whose output is wrong is a kernel fault on this device: it is logged, and where no config is right
    the product is refused, never run wrong."""
    tried, wrong = [], []

    def seen(config, outcome):
        tried.append(outcome if isinstance(outcome, str) else f"{outcome:.3f}")
        if outcome == "wrong":
            wrong.append(config)
    best, _ = fastest(configs, run, bench, seen, check)
    print(f"sparc autotune {key}: {best} from ms [{' '.join(tried)}]", file=sys.stderr, flush=True)
    if wrong:
        log.warning("sparc: %s: %d configs gave outputs off the reference on this device and are never chosen: %s",
                    key, len(wrong), wrong)
    if wrong and best is None:
        raise SparcError(f"{key}: no launch config gave the right output on this device (tried {len(configs)}); "
                         "run the GPU tests (pytest -m gpu) and report the kernel that fails")
    return best


def nearest_config(key: str, default, candidates: Sequence, path: Path, device_name: str):
    """The config of the nearest tuned shape's entry (logged), where this product's kernel takes it (that
    entry may name a kernel variant this shape cannot run: then, as without one, the default)."""
    near = nearest_key(_read(path), key)
    if near is None:
        return default
    try:
        config = config_from(near, lookup(path, near), [default, *candidates])
    except SparcError:
        log.info("sparc: %s has no tuned config on %s, and %s's is not one this product runs: it takes the "
                 "default (SPARC_AUTOTUNE=1 tunes it)", key, device_name, near)
        return default
    log.info("sparc: %s has no tuned config on %s; it takes %s's (SPARC_AUTOTUNE=1 tunes it)", key, device_name,
             near)
    return config


def config_from(key: str, fields: dict, configs: Sequence):
    """The table's `fields` for `key` as a config of the first type among `configs` that has every one of them
    and needs no other: the kernel's own, or the rebuild's where the kernel's tuner also weighs it."""
    for config in configs:
        names = {field.name for field in dataclasses.fields(config)}
        needed = {field.name for field in dataclasses.fields(config)
                  if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING}
        if needed <= set(fields) <= names:
            return type(config)(**fields)
    raise SparcError(f"sparc's tuned table holds {key} = {fields}, no config this kernel takes: rerun with "
                     "SPARC_AUTOTUNE=1 to retune it")
