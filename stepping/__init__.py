"""The shared core: kernels, the Optimizer adapter, the time loop, noise, grids, oracles and the
algorithm registry. Imports nothing from the layers above it."""

from stochstep.stepping.grids import as_grid, edm, geometric, uniform
from stochstep.stepping.integrate import Solution, Stepper, integrate
from stochstep.stepping.kernels import diffgrad_, langevin_
from stochstep.stepping.noise import (Brownian, FractionalBrownian, fbm_covariance, fbm_path,
                                      make_generator, standard_normal_like)
from stochstep.stepping.optimizer import KernelOptimizer
from stochstep.stepping.oracles import hvp, score_from_log_prob, value_and_grad
from stochstep.stepping.registry import AlgorithmInfo, algorithms, get, register

__all__ = [
    "AlgorithmInfo", "Brownian", "FractionalBrownian", "KernelOptimizer", "Solution", "Stepper",
    "algorithms", "fbm_covariance", "fbm_path",
    "as_grid", "diffgrad_", "edm", "geometric", "get", "hvp", "integrate", "langevin_",
    "make_generator", "register", "score_from_log_prob", "standard_normal_like", "uniform",
    "value_and_grad",
]
