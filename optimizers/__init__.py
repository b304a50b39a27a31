"""torch.optim-compatible optimizers from the papers; each module registers its records."""

from stochstep.optimizers.diffgrad import DiffGrad
from stochstep.optimizers.sgmcmc import PSGLD, SGHMC, SGLD
from stochstep.optimizers.cbo import CBO, cbo_minimize, cbs_sample
from stochstep.optimizers.srrw import SASRRW, simulate_token
from stochstep.optimizers.policy_gradient import (HARPG, NPGIGT, NSGDM, VanillaPG,
                                                   hessian_vector_estimate)

__all__ = ["CBO", "DiffGrad", "HARPG", "NPGIGT", "NSGDM", "PSGLD", "SGHMC", "SGLD", "SASRRW",
           "VanillaPG", "cbo_minimize", "cbs_sample", "hessian_vector_estimate", "simulate_token"]
