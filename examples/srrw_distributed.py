"""SA-SRRW for real: one process per agent on torch.distributed (gloo), the token moving by
point-to-point messages (the loop is ``optimizers.srrw.run_token_ring``).

Agent i (= rank i = node i of the graph) holds only its own shard of a distributed
L2-regularised logistic regression (``optimizers.srrw.logistic_shard``). The token is
theta plus the walk state (current node, measure y and its scale, move count, generator
state, and the settings it was made with). Every iteration the holder X_n applies
theta_n = theta_{n-1} - beta_n grad f_i(theta_{n-1}) / (N mu_i), moves the token with the
SRRW kernel, all ranks learn X_{n+1} from one all_reduce of a status vector, and the holder
sends the token there. From the same seed the run reproduces the single-process
``optimizers.srrw.simulate_token`` bit for bit.

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
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from stochstep.optimizers.srrw import (TokenRingError, logistic_grad,  # noqa: E402,F401
                                       logistic_shard, run_token_ring)


@dataclass
class Config:
    steps: int = 200
    seed: int = 0
    lr: float = 1.0
    alpha: float = 5.0
    gamma_exponent: float = 0.6
    lr_exponent: float = 0.9
    base: str = "mhrw"
    samples: int = 20
    dim: int = 3
    reg: float = 0.1
    timeout_s: float = 30.0
    out: str | None = None  # rank 0 saves {"nodes", "theta"} here
    fail_rank: int = -1  # testing: this rank fails ...
    fail_step: int = -1  # ... at its first gradient from this iteration on ...
    fail_mode: str = "raise"  # ... by raising, or "kill" (SIGKILL itself, like a crash)


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(Config()).items():
        kind = type(value) if value is not None else str
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    cfg = Config(**vars(parser.parse_args(argv)))
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
