"""torch.optim-compatible optimizers from the papers; each module registers its records."""

from stochstep.optimizers.diffgrad import DiffGrad
from stochstep.optimizers.sgmcmc import PSGLD, SGHMC, SGLD
from stochstep.optimizers.cbo import CBO, cbo_minimize, cbs_sample
from stochstep.optimizers.srrw import SASRRW, simulate_token

__all__ = ["CBO", "DiffGrad", "PSGLD", "SGHMC", "SGLD", "SASRRW", "cbo_minimize", "cbs_sample",
           "simulate_token"]
