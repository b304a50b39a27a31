"""Samplers on the stepping core; each is a stepper run by `stepping.integrate`."""

from stochstep.samplers.langevin import MALA, ULA, UnderdampedLangevin, rhat, thin
from stochstep.samplers.sde import SubVPSDE, VESDE, VPSDE
from stochstep.samplers.score_sde import dsm_loss, log_likelihood, sample
from stochstep.samplers.interpolants import (DataSeparation, Interpolant,  # noqa: F401
                                             InterpolantFields, InterpolantODE, InterpolantSDE,
                                             estimate_data_separation,
                                             interpolant_log_likelihood, kinetic_energy,
                                             kinetic_optimal_path)

__all__ = ["ULA", "MALA", "UnderdampedLangevin", "rhat", "thin",
           "SubVPSDE", "VESDE", "VPSDE", "dsm_loss", "log_likelihood", "sample"]
__all__ += ["Interpolant", "InterpolantFields", "InterpolantODE", "InterpolantSDE",
            "interpolant_log_likelihood", "DataSeparation", "estimate_data_separation",
            "kinetic_energy", "kinetic_optimal_path"]
from stochstep.samplers.dmcmc import DMCMCResult, LangevinGibbs, dmcmc_sample  # noqa: E402
__all__ += ["DMCMCResult", "LangevinGibbs", "dmcmc_sample"]
from stochstep.samplers.random_walks import SRRW, NonBacktrackingWalk  # noqa: E402
__all__ += ["SRRW", "NonBacktrackingWalk"]
from stochstep.samplers.ot import OTLog, OTResult, entropic_ot  # noqa: E402
__all__ += ["OTLog", "OTResult", "entropic_ot"]
from stochstep.samplers.bridges import BridgeSDE, LightSB, PlanComponents  # noqa: E402
__all__ += ["BridgeSDE", "LightSB", "PlanComponents"]
