"""Scaling-law analysis: recipes judged by the asymptote of `L(x) = A / x^alpha + E` in model size N, ensemble size
K and data D, with bootstrap uncertainty; data efficiency over a reference recipe; the paper's figures; and the
report that `hf-infcompute fit` writes from a results store."""

from hf_infcompute.scaling.analysis import ScalingReport, build_report
from hf_infcompute.scaling.joint import JointFit, fit_k_law, joint_asymptote
from hf_infcompute.scaling.plots import (
    plot_data_efficiency,
    plot_data_scaling,
    plot_joint_fit,
    plot_loss_vs_members,
    plot_loss_vs_params,
)
from hf_infcompute.scaling.power_law import (
    PowerLawFit,
    ScalingFitWarning,
    data_efficiency,
    effective_data,
    fit_power_law,
    interpolated_data,
)
from hf_infcompute.scaling.report import write_report

__all__ = [
    "JointFit",
    "PowerLawFit",
    "ScalingFitWarning",
    "ScalingReport",
    "build_report",
    "data_efficiency",
    "effective_data",
    "fit_k_law",
    "fit_power_law",
    "interpolated_data",
    "joint_asymptote",
    "plot_data_efficiency",
    "plot_data_scaling",
    "plot_joint_fit",
    "plot_loss_vs_members",
    "plot_loss_vs_params",
    "write_report",
]
