"""Planners turn weights and calibration statistics into LayerPlans; nothing downstream knows which one ran.

Per-layer planners: `plan_layer(weight (N, K) float32, stats: InputStats, settings) -> LayerPlan`, called in
graph order, each layer calibrated on the outputs of the already-planned ones. Model-level planners:
`plan_model(context: PlanContext) -> {name: LayerPlan}` (PATCH, CFSP and its baselines). Each declares the
patterns it can make and whether it needs calibration (and the Hessian X^T X).
"""
from . import baselines, cfsp, gqsa, patch, sparsegpt

PLANNERS = {
    "dense": baselines.Dense,
    "magnitude": baselines.Magnitude,
    "wanda": baselines.Wanda,
    "sparsegpt": sparsegpt.SparseGPT,
    "gqsa": gqsa.GQSA,
    "patch": patch.Patch,
    "cfsp": cfsp.Cfsp,
    "wanda-sp": cfsp.WandaSP,
    "magnitude-sp": cfsp.MagnitudeSP,
}
