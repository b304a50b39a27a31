"""Checks of the papers' claims that users run on their own models (grows with later work)."""

from theory_checks.srrw import (VarianceCheck, base_chain_asymptotic_covariance,
                                measure_sa_srrw_covariance, measure_srrw_variance,
                                reversible_eigenpairs, sa_srrw_asymptotic_covariance,
                                srrw_asymptotic_covariance)

__all__: list[str] = [
    "VarianceCheck", "base_chain_asymptotic_covariance", "measure_sa_srrw_covariance",
    "measure_srrw_variance", "reversible_eigenpairs", "sa_srrw_asymptotic_covariance",
    "srrw_asymptotic_covariance",
]
