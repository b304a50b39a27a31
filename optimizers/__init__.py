"""torch.optim-compatible optimizers from the papers; each module registers its records."""

from optimizers.diffgrad import DiffGrad
from optimizers.sgmcmc import PSGLD, SGHMC, SGLD
from optimizers.srrw import SASRRW, simulate_token

__all__ = ["DiffGrad", "PSGLD", "SGHMC", "SGLD", "SASRRW", "simulate_token"]
