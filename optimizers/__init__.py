"""torch.optim-compatible optimizers from the papers; each module registers its records."""

from stochstep.optimizers.bilevel import BSVRB, BlockOracles, block_oracles
from stochstep.optimizers.diffgrad import DiffGrad
from stochstep.optimizers.sgmcmc import PSGLD, SGHMC, SGLD
from stochstep.optimizers.cbo import CBO, cbo_minimize, cbs_sample
from stochstep.optimizers.convex_relu import ConvexReLU
from stochstep.optimizers.srrw import SASRRW, simulate_token
from stochstep.optimizers.domains import Ball, Box, CvxpySet, L1Ball, Simplex
from stochstep.optimizers.online import (CSMD, OptimisticOMD, prox_group_l2_,
                                          prox_l1_)
from stochstep.optimizers.policy_gradient import (HARPG, NPGIGT, NSGDM, VanillaPG,
                                                   hessian_vector_estimate)
from stochstep.optimizers.surrogate import SSO

__all__ = ["BSVRB", "Ball", "BlockOracles", "Box", "CBO", "CSMD", "ConvexReLU", "CvxpySet", "DiffGrad",
           "HARPG", "L1Ball", "NPGIGT", "NSGDM", "OptimisticOMD", "PSGLD", "SGHMC", "SGLD",
           "SASRRW", "SSO", "Simplex", "VanillaPG", "block_oracles", "cbo_minimize",
           "cbs_sample", "hessian_vector_estimate", "prox_group_l2_", "prox_l1_",
           "simulate_token"]
