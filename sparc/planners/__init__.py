"""Planners: each turns a weight and its calibration statistics into a LayerPlan.

A planner is `plan_layer(weight (N, K) float32, stats: InputStats, settings: PlanSettings) -> LayerPlan` and
declares the patterns it can make. Nothing downstream knows which planner ran.
"""
from . import baselines

PLANNERS = {
    "dense": baselines.Dense,
    "magnitude": baselines.Magnitude,
    "wanda": baselines.Wanda,
}
