"""torch.optim-compatible optimizers from the papers; each module registers its records."""

from optimizers.diffgrad import DiffGrad
from optimizers.sgmcmc import PSGLD, SGHMC, SGLD

__all__ = ["DiffGrad", "PSGLD", "SGHMC", "SGLD"]
