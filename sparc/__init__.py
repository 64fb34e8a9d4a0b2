"""sparc: plan, pack and run sparse and low-bit LLM weights through torch.compile.

    plan = sparc.plan(model, calibration, method="wanda", sparsity=0.5, pattern="2:4")
    fast = torch.compile(model, backend="sparc", options={"plan": plan})
"""
from .api import plan, reference
from .errors import PlanMismatch, SparcError
from .ir import LayerPlan, Plan, TileFormat
from .options import Options, PlanSettings

__all__ = ["plan", "reference", "Plan", "LayerPlan", "TileFormat", "PlanSettings", "Options", "SparcError",
           "PlanMismatch"]
