"""Samplers on the stepping core; each is a stepper run by `stepping.integrate`."""

from samplers.langevin import MALA, ULA, UnderdampedLangevin, rhat, thin
from samplers.sde import SubVPSDE, VESDE, VPSDE
from samplers.score_sde import dsm_loss, log_likelihood, sample
from samplers.interpolants import (Interpolant, InterpolantFields, InterpolantODE,  # noqa: F401
                                   InterpolantSDE, interpolant_log_likelihood)

__all__ = ["ULA", "MALA", "UnderdampedLangevin", "rhat", "thin",
           "SubVPSDE", "VESDE", "VPSDE", "dsm_loss", "log_likelihood", "sample"]
__all__ += ["Interpolant", "InterpolantFields", "InterpolantODE", "InterpolantSDE",
            "interpolant_log_likelihood"]
from samplers.dmcmc import DMCMCResult, LangevinGibbs, dmcmc_sample  # noqa: E402
__all__ += ["DMCMCResult", "LangevinGibbs", "dmcmc_sample"]
from samplers.random_walks import SRRW, NonBacktrackingWalk  # noqa: E402
__all__ += ["SRRW", "NonBacktrackingWalk"]
