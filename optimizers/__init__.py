"""torch.optim-compatible optimizers from the papers; each module registers its records."""

from optimizers.diffgrad import DiffGrad
from optimizers.sgmcmc import PSGLD, SGHMC, SGLD
from optimizers.cbo import CBO, cbo_minimize, cbs_sample
from optimizers.srrw import SASRRW, simulate_token

__all__ = ["CBO", "DiffGrad", "PSGLD", "SGHMC", "SGLD", "SASRRW", "cbo_minimize", "cbs_sample",
           "simulate_token"]
