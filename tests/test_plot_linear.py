"""The plot of benchmarks/linear.py's tables: every speedup read back from a table the benchmark's own code
writes, from made-up timings, and an image drawn from them."""
import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import linear  # noqa: E402
import plot_linear  # noqa: E402


def made_up_tables(seed: int):
    """Markdown of two shapes as `linear.main` writes it, with random times, a cell a layout cannot run and one
    whose output check failed; and the speedups and rebuilds the other times give."""
    rng = random.Random(seed)
    layouts, ms = ["cublas", "nv24", "int4", "hybrid30"], [1, 16, 2048]
    args = argparse.Namespace(layouts=layouts, m=ms)
    lines, expected = [], {}
    for shape in [(4096, 4096), (5000, 3000)]:
        stored = {name: (linear.Operand(run=None, nbytes=1000, ideal=1000, weight=None), 8) for name in layouts}
        cells = {(name, m): (rng.uniform(1, 500), None, rng.random() < 0.3) for name in layouts for m in ms}
        cells["int4", 16] = "cannot run: K % 128 != 0"
        cells["nv24", 2048] = (rng.uniform(1, 500), "off by 5%", False)  # its check failed: marked *, left out
        lines += [f"### {shape[0]} x {shape[1]}", "", *linear.shape_section(shape, args, cells, stored), ""]
        expected[shape] = {name: {m: (round(cells["cublas", m][0] / cells[name, m][0], 2), cells[name, m][2])
                                  for m in ms if isinstance(cells[name, m], tuple) and not cells[name, m][1]}
                          for name in layouts}
    return "\n".join(lines), expected


def test_reads_every_speedup_and_rebuild_of_each_shape():
    for seed in range(5):
        markdown, expected = made_up_tables(seed)
        assert plot_linear.speedups(markdown) == expected
        assert 16 not in plot_linear.speedups(markdown)[4096, 4096]["int4"]


def test_draws_an_image(tmp_path):
    markdown, _ = made_up_tables(0)
    path = tmp_path / "linear.png"
    plot_linear.plot(plot_linear.speedups(markdown), str(path), "made up")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
