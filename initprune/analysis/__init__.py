"""Analyses beyond scoring: how well the scalable curvature estimates match the exact diagonal."""

from .curvature import analyze_curvature, run_curvature_analysis
from .tables import plot_curvature, write_report

__all__ = ["analyze_curvature", "plot_curvature", "run_curvature_analysis", "write_report"]
