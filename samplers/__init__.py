"""Samplers on the stepping core; each is a stepper run by `stepping.integrate`."""

from stochstep.samplers.langevin import MALA, ULA, UnderdampedLangevin, rhat, thin
from stochstep.samplers.sde import SubVPSDE, VESDE, VPSDE
from stochstep.samplers.score_sde import dsm_loss, log_likelihood, sample
from stochstep.samplers.interpolants import (Interpolant, InterpolantFields,  # noqa: F401
                                             InterpolantODE, InterpolantSDE,
                                             interpolant_log_likelihood)

__all__ = ["ULA", "MALA", "UnderdampedLangevin", "rhat", "thin",
           "SubVPSDE", "VESDE", "VPSDE", "dsm_loss", "log_likelihood", "sample"]
__all__ += ["Interpolant", "InterpolantFields", "InterpolantODE", "InterpolantSDE",
            "interpolant_log_likelihood"]
from stochstep.samplers.dmcmc import DMCMCResult, LangevinGibbs, dmcmc_sample  # noqa: E402
__all__ += ["DMCMCResult", "LangevinGibbs", "dmcmc_sample"]
from stochstep.samplers.random_walks import SRRW, NonBacktrackingWalk  # noqa: E402
__all__ += ["SRRW", "NonBacktrackingWalk"]
from stochstep.samplers.bridges import LightSB, PlanComponents  # noqa: E402
__all__ += ["LightSB", "PlanComponents"]
