"""Checks of the papers' claims that users run on their own models (grows with later work)."""

from stochstep.theory_checks.batch_size import (LRScaling, MinibatchHessianExtremes, StabilityTrial,
                                                StableLR, SuggestedLR, largest_stable_lr,
                                                lr_batch_scaling, minibatch_hessian_extremes,
                                                stability_trial, suggest_lr)
from stochstep.theory_checks.bilevel import (QuadraticBlocks, SpeedupGrid, parallel_speedup,
                                             quadratic_blocks)
from stochstep.theory_checks.bridges import MixtureBenchmark, bures_wasserstein, cbw2_uvp
from stochstep.theory_checks.fokker_planck import (OdeSdeGap, fp_residual_log_density,
                                                   fp_residual_score, ou_ode_sde_gap,
                                                   wasserstein2_1d)
from stochstep.theory_checks.hessian import (HessianTrace, SpectralDensity, hessian_trace,
                                             loss_from_model, spectral_density, top_eigenvalues)
from stochstep.theory_checks.online import (SEA_DRIFTS, SEA_SWEEP, AdaptivityCheck,
                                            RegretScaling, SEAInstance, ogd_does_not_adapt,
                                            play_ogd, play_optimistic_omd, regret,
                                            sea_quadratic, sea_regret_scaling)
from stochstep.theory_checks.properties import (assert_converges, assert_diverges_above,
                                                assert_invariant, assert_linear_rate,
                                                assert_monotone_loss, assert_same_trajectory,
                                                run_optimizer, step_budget)
from stochstep.theory_checks.rates import (STEP_SCHEDULES, LastIterateGaps, PowerLawFit,
                                           StochasticProblem, TemperatureSweep, l1_problem,
                                           last_iterate_gap, least_squares_problem, loglog_slope,
                                           perceptron_temperature)
from stochstep.theory_checks.stochastic import (KINDS, RATES, LinearChain, NoiseBallResult,
                                                RateInExpectationResult, StationaryLawResult,
                                                assert_noise_ball, assert_rate_in_expectation,
                                                assert_stationary_law, expected_moments,
                                                expected_second_moments, linear_chain,
                                                noise_ball_false_failures,
                                                sgd_inverse_time_constant,
                                                stationary_covariance)
from stochstep.theory_checks.stability import (MinimaComparison, StabilityReport,
                                               diagonal_network_minima, relu_network_minima,
                                               stability_report)
from stochstep.theory_checks.srrw import (VarianceCheck, base_chain_asymptotic_covariance,
                                          measure_sa_srrw_covariance, measure_srrw_variance,
                                          reversible_eigenpairs, sa_srrw_asymptotic_covariance,
                                          srrw_asymptotic_covariance)
from stochstep.theory_checks.tabular_mdp import (PAPER_EXPONENTS, OptimalReturn,
                                                 RateMeasurement, TabularMDP, Trajectories,
                                                 exact_gradient, exact_hessian_vector,
                                                 optimal_return, policy_gradient_rate,
                                                 sample_trajectories, softmax_policy,
                                                 tabular_log_probs, truncated_return)

__all__: list[str] = [
    "LRScaling", "MinibatchHessianExtremes", "StabilityTrial", "StableLR", "SuggestedLR",
    "largest_stable_lr", "lr_batch_scaling", "minibatch_hessian_extremes", "stability_trial",
    "suggest_lr",
    "QuadraticBlocks", "SpeedupGrid", "parallel_speedup", "quadratic_blocks",
    "MixtureBenchmark", "bures_wasserstein", "cbw2_uvp",
    "OdeSdeGap", "fp_residual_log_density", "fp_residual_score", "ou_ode_sde_gap",
    "wasserstein2_1d",
    "SEA_DRIFTS", "SEA_SWEEP", "AdaptivityCheck", "RegretScaling", "SEAInstance",
    "ogd_does_not_adapt", "play_ogd", "play_optimistic_omd", "regret", "sea_quadratic",
    "sea_regret_scaling",
    "assert_converges", "assert_diverges_above", "assert_linear_rate", "assert_monotone_loss",
    "assert_same_trajectory", "run_optimizer", "assert_invariant", "step_budget",
    "HessianTrace", "SpectralDensity", "hessian_trace", "loss_from_model", "spectral_density",
    "top_eigenvalues",
    "STEP_SCHEDULES", "LastIterateGaps", "PowerLawFit", "StochasticProblem", "TemperatureSweep",
    "l1_problem", "last_iterate_gap", "least_squares_problem", "loglog_slope",
    "perceptron_temperature",
    "KINDS", "LinearChain", "NoiseBallResult", "StationaryLawResult", "assert_noise_ball",
    "assert_stationary_law", "expected_moments", "expected_second_moments", "linear_chain",
    "noise_ball_false_failures", "stationary_covariance", "RATES", "RateInExpectationResult",
    "assert_rate_in_expectation", "sgd_inverse_time_constant",
    "MinimaComparison", "StabilityReport", "diagonal_network_minima", "relu_network_minima",
    "stability_report",
    "VarianceCheck", "base_chain_asymptotic_covariance", "measure_sa_srrw_covariance",
    "measure_srrw_variance", "reversible_eigenpairs", "sa_srrw_asymptotic_covariance",
    "srrw_asymptotic_covariance",
    "OptimalReturn", "TabularMDP", "Trajectories", "exact_gradient", "exact_hessian_vector",
    "PAPER_EXPONENTS", "RateMeasurement", "policy_gradient_rate",
    "optimal_return", "sample_trajectories", "softmax_policy", "tabular_log_probs",
    "truncated_return",
]
