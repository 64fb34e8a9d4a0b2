"""benchmarks/compile_candidates.py: each job runs the default and every candidate the tuner weighs for its
product once, and lists the ones that fail; on the CPU under the interpreter, tiny shapes."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compile_candidates  # noqa: E402
import linear  # noqa: E402
from sparc.kernels import tuning  # noqa: E402


@pytest.mark.parametrize("name, m", [("nv24", 3), ("bsr_int4", 1), ("hybrid30", 20)])
def test_a_job_runs_every_config_the_tuner_weighs_once(name, m, monkeypatch):
    ran, real_runner = [], tuning.runner

    def recording_runner(run, config):
        def recorded(*args, **kwargs):
            ran.append(config)
            return real_runner(run, config)(*args, **kwargs)
        return recorded
    monkeypatch.setattr(tuning, "runner", recording_runner)
    what, count, failed = compile_candidates.compile_job((name, (96, 256), m, "cpu"))
    x = torch.empty(m, 256, dtype=linear.BF16)
    packed = linear.BUILDERS[name](torch.randn(96, 256).to(linear.BF16), torch.Generator().manual_seed(0)).packed
    kernel = tuning.kernel_for(packed.layout, x, packed.tensors)[0]
    expected = [tuning.default(kernel, packed.layout, m), *tuning.product_candidates(kernel, packed.layout, x,
                                                                                     packed.tensors)]
    assert what == f"{name} 96x256 M={m} ({kernel})" and count == len(expected) > 1
    assert ran == expected and failed == []


def test_a_config_that_fails_is_listed_and_the_others_still_run(monkeypatch):
    real_runner, ran = tuning.runner, []

    def failing_second(run, config):
        ran.append(config)
        if len(ran) == 2:
            raise RuntimeError("out of resources: shared memory")
        return real_runner(run, config)
    monkeypatch.setattr(tuning, "runner", failing_second)
    _, count, failed = compile_candidates.compile_job(("nv24", (96, 256), 3, "cpu"))
    assert len(ran) == count > 2
    assert failed == [f"{ran[1]}: fails: RuntimeError: out of resources: shared memory"]
