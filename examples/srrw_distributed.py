"""SA-SRRW for real: one process per agent on torch.distributed (gloo), the token moving by
point-to-point messages (the loop is ``stochstep.optimizers.srrw.run_token_ring``).

Agent i (= rank i = node i of the graph) holds only its own shard of a distributed
L2-regularised logistic regression (``stochstep.optimizers.srrw.logistic_shard``). The token is
theta plus the walk state (current node, measure y and its scale, move count, generator
state, and the settings it was made with). Every iteration the holder X_n applies
theta_n = theta_{n-1} - beta_n grad f_i(theta_{n-1}) / (N mu_i), moves the token with the
SRRW kernel, all ranks learn X_{n+1} from one all_reduce of a status vector, and the holder
sends the token there. From the same seed the run reproduces the single-process
``stochstep.optimizers.srrw.simulate_token`` bit for bit.

Failures: the agent whose own code raises re-raises its own error (after flagging it in the
next all_reduce); the others raise ``TokenRingError`` naming it. An agent that dies or hangs
breaks the others' collectives, which raise ``TokenRingError`` at the latest after the
process-group ``timeout``: nobody hangs.

Run (from the repository root):

    torchrun --standalone --nproc_per_node 4 examples/srrw_distributed.py --steps 200

or, from Python, ``torch.multiprocessing.spawn(spawn_entry, args=(world_size, port, config),
nprocs=world_size)`` (see ``tests/test_srrw_distributed.py``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from dataclasses import dataclass, field, fields

import torch
import torch.distributed as dist

from stochstep.optimizers.srrw import (TokenRingError, logistic_grad,  # noqa: E402,F401
                                       logistic_shard, run_token_ring)


def _option(default, help: str, **kwargs):
    """A Config field that carries its command-line help (and choices, if any)."""
    return field(default=default, metadata=dict(help=help, **kwargs))


@dataclass
class Config:
    steps: int = _option(200, "token iterations n = 1..steps")
    seed: int = _option(0, "seed of the agents' data and of the walk's generator (rank 0)")
    lr: float = _option(1.0, "scale of the step size beta_n = lr (n+1)^-lr_exponent")
    alpha: float = _option(5.0, "self-repellence strength alpha >= 0 (0: the base chain)")
    gamma_exponent: float = _option(0.6, "a in (0.5, 1]: the measure's step gamma_n = (n+1)^-a")
    lr_exponent: float = _option(0.9, "b in (0.5, 1]: the step size's decay exponent")
    base: str = _option("mhrw", "base chain: Metropolis-Hastings towards uniform (mhrw) or the "
                        "simple random walk (srw)", choices=("mhrw", "srw"))
    samples: int = _option(20, "data points held by each agent")
    dim: int = _option(3, "dimension D of theta (logistic regression features)")
    reg: float = _option(0.1, "L2 regularisation of each agent's logistic loss")
    timeout_s: float = _option(30.0, "process-group timeout (s): the longest any agent waits "
                               "for a dead or hanging peer before raising")
    out: str | None = _option(None, "rank 0 saves {'nodes': (steps,), 'theta': (steps, D)} to "
                              "this file with torch.save (default: save nothing)")
    fail_rank: int = _option(-1, "testing: the rank that fails (-1: none)")
    fail_step: int = _option(-1, "testing: it fails at its first gradient from this iteration on")
    fail_mode: str = _option("raise", "testing: fail by raising an error or by SIGKILLing "
                             "itself", choices=("raise", "kill"))


def ring_graph(n: int):
    """The agents' graph: a ring with one chord (non-regular from 4 nodes on)."""
    import networkx as nx
    if n == 2:
        return nx.path_graph(2)
    g = nx.cycle_graph(n)
    if n >= 4:
        g.add_edge(0, n // 2)
    return g


def run_agent(rank: int, world_size: int, cfg: Config):
    """The agent (the process group must already be initialised). Returns
    ``{"nodes": (steps,), "theta": (steps, D)}`` on rank 0 and None elsewhere."""
    features, labels = logistic_shard(rank, samples=cfg.samples, dim=cfg.dim, seed=cfg.seed)

    def grad_fn(theta: torch.Tensor, n: int) -> torch.Tensor:
        if rank == cfg.fail_rank and n >= cfg.fail_step:
            _fail(cfg.fail_mode, rank, n)
        return logistic_grad(theta[None], features[None], labels[None], cfg.reg)[0]

    result = run_token_ring(ring_graph(world_size), grad_fn, torch.zeros(cfg.dim),
                            steps=cfg.steps, lr=cfg.lr, alpha=cfg.alpha,
                            gamma_exponent=cfg.gamma_exponent, lr_exponent=cfg.lr_exponent,
                            base=cfg.base, generator=torch.Generator().manual_seed(cfg.seed))
    if result is not None and cfg.out:
        torch.save(result, cfg.out)
    return result


def _fail(mode: str, rank: int, k: int):
    if mode == "kill":
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError(f"agent {rank}: injected failure at iteration {k}")


def _init(rank: int, world_size: int, cfg: Config, init_method: str) -> None:
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=cfg.timeout_s))


def spawn_entry(rank: int, world_size: int, port: int, cfg: dict) -> None:
    """``torch.multiprocessing.spawn`` target: localhost TCP rendezvous on ``port``."""
    torch.set_num_threads(1)
    config = Config(**cfg)
    _init(rank, world_size, config, f"tcp://127.0.0.1:{port}")
    try:
        run_agent(rank, world_size, config)
    finally:
        dist.destroy_process_group()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(Config):
        kind = type(f.default) if f.default is not None else str
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                            help=f.metadata["help"] + (" (default: %(default)s)"
                                                       if f.default is not None else ""),
                            choices=f.metadata.get("choices"))
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    cfg = Config(**vars(parser.parse_args(argv)))
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        # torchrun sets RANK and WORLD_SIZE for each of the processes it starts
        args = sys.argv[1:] if argv is None else list(argv)
        sys.exit(f"{parser.prog} runs one process per agent and must be started by torchrun, "
                 f"which sets RANK and WORLD_SIZE (here unset). For 4 agents:\n\n"
                 f"    torchrun --standalone --nproc_per_node 4 {shlex.join([sys.argv[0], *args])}"
                 f"\n\n"
                 f"(--nproc_per_node N: N agents on a ring with one chord, N >= 2.)")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    _init(rank, world, cfg, "env://")
    try:
        result = run_agent(rank, world, cfg)
        if rank == 0:
            from stochstep.optimizers.srrw import LogisticProblem
            prob = LogisticProblem.generate(world, samples=cfg.samples, dim=cfg.dim,
                                            reg=cfg.reg, seed=cfg.seed)
            err = ((result["theta"][-1] - prob.solve()) ** 2).sum()
            visits = torch.bincount(result["nodes"], minlength=world).tolist()
            print(f"{cfg.steps} steps on {world} agents: visits {visits}, "
                  f"||theta - theta*||^2 = {float(err):.3e}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
