"""User-facing settings: what a plan is made with (PlanSettings) and the backend's options (Options)."""
from __future__ import annotations

import dataclasses

from .errors import SparcError
from .ir import Plan
from .planners import PLANNERS

INNER_COMPILERS = ("inductor", "eager")
DEFAULT_SPARSITY = {"dense": 0.0, "2:4": 0.5}
SPARSITY_RANGE = {"hybrid": (0.0, 0.5)}  # PATCH tiles are dense or 2:4


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    """method: a planner name; sparsity: fraction of weights removed, in [0, 1); pattern: what the planner makes
    ("2:4", "unstructured", "dense"); bits: 16 (weights keep the activation dtype) or 4 (int4 groups of `group`);
    tile: the tile edge of the format grid; exclude: substrings of weight names left dense; refine_steps:
    optimisation steps of planners that refine their one-shot result (PATCH, GQSA); prior: the one-shot
    method a refining planner starts from ("sparsegpt" or "wanda"); refine_lr: the refinement's learning rate."""

    method: str = "wanda"
    sparsity: float | None = None
    pattern: str | None = None
    bits: int = 16
    group: int = 128
    tile: int = 128
    exclude: tuple[str, ...] = ("lm_head",)
    refine_steps: int = 0
    refine_lr: float = 1e-3
    prior: str = "sparsegpt"

    def __post_init__(self):
        if self.method not in PLANNERS:
            raise SparcError(f"unknown method '{self.method}': choose one of {sorted(PLANNERS)}")
        planner = PLANNERS[self.method]
        pattern = self.pattern or planner.patterns[0]
        if pattern not in planner.patterns:
            raise SparcError(f"method '{self.method}' cannot make pattern '{pattern}': it makes {list(planner.patterns)}")
        sparsity = DEFAULT_SPARSITY.get(pattern, 0.5) if self.sparsity is None else self.sparsity
        if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
            raise SparcError(f"option 'sparsity' must be a number in [0, 1), got {sparsity!r}")
        low, high = SPARSITY_RANGE.get(pattern, (0.0, 1.0))
        if not low <= sparsity <= high:
            raise SparcError(f"option 'sparsity' must be in [{low}, {high}] for method '{self.method}', got {sparsity}")
        if pattern in DEFAULT_SPARSITY and sparsity != DEFAULT_SPARSITY[pattern]:
            raise SparcError(f"pattern '{pattern}' fixes sparsity at {DEFAULT_SPARSITY[pattern]}, got {sparsity}")
        if self.bits not in (16, 4):
            raise SparcError(f"option 'bits' must be 16 or 4, got {self.bits!r}")
        if self.group not in (32, 64, 128):
            raise SparcError(f"option 'group' must be 32, 64 or 128, got {self.group!r}")
        if self.tile not in (64, 128):
            raise SparcError(f"option 'tile' must be 64 or 128, got {self.tile!r}")
        if not isinstance(self.refine_steps, int) or self.refine_steps < 0:
            raise SparcError(f"option 'refine_steps' must be a non-negative integer, got {self.refine_steps!r}")
        if not isinstance(self.refine_lr, (int, float)) or not self.refine_lr > 0:
            raise SparcError(f"option 'refine_lr' must be a positive number, got {self.refine_lr!r}")
        if self.prior not in ("wanda", "sparsegpt"):
            raise SparcError(f"option 'prior' must be 'wanda' or 'sparsegpt', got {self.prior!r}")
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "sparsity", float(sparsity))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def quant_group(self) -> int:
        return self.group if self.bits == 4 else 0

    def as_dict(self) -> dict:
        """JSON-ready: the exclude tuple becomes a list."""
        return {**dataclasses.asdict(self), "exclude": list(self.exclude)}


PLAN_KEYS = tuple(f.name for f in dataclasses.fields(PlanSettings))


@dataclasses.dataclass(frozen=True)
class Options:
    """The backend's options: `torch.compile(model, backend="sparc", options={...})`.

    plan: a sparc.Plan to apply; or method (+ the PlanSettings keys) and calibration to plan while compiling,
    on calibration batches shaped like the first call; inner: "inductor" (default) or "eager" (no Inductor, for
    debugging); dump: a folder to write the rewritten graph and a per-layer table to."""

    plan: Plan | None = None
    calibration: object = None
    settings: PlanSettings | None = None
    inner: str = "inductor"
    dump: str | None = None

    @classmethod
    def parse(cls, options: dict | None) -> Options:
        options = dict(options or {})
        valid = ("plan", "calibration", "inner", "dump") + PLAN_KEYS
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise SparcError(f"unknown sparc option(s) {unknown}: valid options are {sorted(valid)}")
        plan_keys = {k: options.pop(k) for k in PLAN_KEYS if k in options}
        inner = options.get("inner", "inductor")
        if inner not in INNER_COMPILERS:
            raise SparcError(f"option 'inner' must be one of {INNER_COMPILERS}, got {inner!r}")
        plan = options.get("plan")
        if plan is not None and not isinstance(plan, Plan):
            raise SparcError(f"option 'plan' must be a sparc.Plan (sparc.Plan.load(path) reads a file), got {type(plan).__name__}")
        if plan is not None and plan_keys:
            raise SparcError(f"give either option 'plan' or planning options {sorted(plan_keys)}, not both")
        settings = PlanSettings(**plan_keys) if plan_keys else None
        if settings is not None and options.get("calibration") is None and PLANNERS[settings.method].needs_calibration:
            raise SparcError(f"method '{settings.method}' needs option 'calibration': an iterable of model inputs")
        return cls(plan, options.get("calibration"), settings, inner, options.get("dump"))
