"""SA-SRRW for real: one process per agent on torch.distributed (gloo), the token moving by
point-to-point messages.

Agent i (= rank i = node i of the graph) holds only its own shard of a distributed
L2-regularised logistic regression (``optimizers.srrw.logistic_shard``). The token is
theta plus the walk state (current node, measure y and its scale, move count, generator
state). Every iteration, with everyone knowing who holds the token:

1. the holder X_{n+1} computes its local gradient at theta_n and applies
   theta_{n+1} = theta_n - beta_{n+1} grad f_i(theta_n) / (N mu_i);
2. it moves the token with the SRRW kernel (drawing X_{n+2}, updating x);
3. it broadcasts X_{n+2} to all ranks (one collective: everyone learns who holds it next);
4. if X_{n+2} differs from itself it ``send``s the packed token there, which ``recv``s it.

Only the holder and the next holder talk point to point, and every rank takes part in each
broadcast, so there is no deadlock. At the start rank 0 creates the token (draws X_0, moves to
X_1) exactly as ``optimizers.srrw.simulate_token`` does, so from the same seed the run
reproduces the single-process simulation bit for bit. A rank that dies or raises breaks the
broadcast/recv of the others, which then raise ``TokenRingError`` (at the latest after the
process-group ``timeout``) instead of hanging.

Run (from the repository root):

    torchrun --standalone --nproc_per_node 4 examples/srrw_distributed.py --steps 200

or, from Python, ``torch.multiprocessing.spawn(spawn_entry, args=(world_size, port, config),
nprocs=world_size)`` (see ``tests/test_srrw_distributed.py``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from optimizers.srrw import (load_token_state, logistic_grad, logistic_shard,  # noqa: E402
                             make_token_walk, token_state)


class TokenRingError(RuntimeError):
    """Another agent died, raised or stopped answering: the token cannot continue."""


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
    fail_step: int = -1  # ... at this iteration ...
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


# -- the token on the wire: one uint8 message of fixed size --------------------------------
def _pack(theta: torch.Tensor, state: dict) -> torch.Tensor:
    ints = torch.stack([state["steps"], state["current"][0]]).to(torch.int64)
    floats = torch.cat([state["scale"].reshape(1), state["y"].reshape(-1), theta])
    return torch.cat([ints.view(torch.uint8), floats.view(torch.uint8), state["generator"]])


def _unpack(buf: torch.Tensor, n: int, dim: int) -> tuple[torch.Tensor, dict]:
    ints = buf[:16].view(torch.int64)
    floats = buf[16:16 + 8 * (1 + n + dim)].view(torch.float64)
    state = {"steps": ints[0].clone(), "current": ints[1:2].clone(), "scale": floats[0].clone(),
             "y": floats[1:1 + n].reshape(1, n).clone(),
             "generator": buf[16 + 8 * (1 + n + dim):].clone()}
    return floats[1 + n:].clone(), state


def run_agent(rank: int, world_size: int, cfg: Config):
    """The agent loop (the process group must already be initialised). Returns
    ``{"nodes": (steps,), "theta": (steps, D)}`` on rank 0 and None elsewhere."""
    n = world_size
    graph = ring_graph(n)
    features, labels = logistic_shard(rank, samples=cfg.samples, dim=cfg.dim, seed=cfg.seed)
    # Every agent keeps a walk object; it only holds meaningful state while it has the token.
    gen = torch.Generator().manual_seed(cfg.seed)
    walk, weights = make_token_walk(graph, alpha=cfg.alpha, gamma_exponent=cfg.gamma_exponent,
                                    base=cfg.base, generator=gen)  # rank 0's is the token
    size = _pack(torch.zeros(cfg.dim, dtype=torch.float64), token_state(walk)).numel()
    theta = torch.zeros(cfg.dim, dtype=torch.float64)
    records: list[tuple[int, torch.Tensor]] = []
    holder, k = 0, 0
    nxt = torch.tensor([int(walk.current[0]) if rank == 0 else -1], dtype=torch.int64)
    try:
        for k in range(0, cfg.steps + 1):
            if k > 0 and rank == holder:
                if rank == cfg.fail_rank and k == cfg.fail_step:
                    _fail(cfg.fail_mode, rank, k)
                beta = cfg.lr * (k + 1.0) ** -cfg.lr_exponent
                g = logistic_grad(theta[None], features[None], labels[None], cfg.reg)[0]
                theta = theta - g * (beta * weights[rank])
                records.append((k, theta.clone()))
                walk.step()
                nxt[0] = int(walk.current[0])
            elif rank == cfg.fail_rank and k == cfg.fail_step:
                _fail(cfg.fail_mode, rank, k)
            if k == cfg.steps:
                break
            dist.broadcast(nxt, src=holder)  # the holder tells everyone who is next
            new = int(nxt[0])
            if new != holder:
                if rank == holder:
                    dist.send(_pack(theta, token_state(walk)), dst=new)
                elif rank == new:
                    buf = torch.empty(size, dtype=torch.uint8)
                    dist.recv(buf, src=holder)
                    theta, state = _unpack(buf, n, cfg.dim)
                    load_token_state(walk, state)
            holder = new
        gathered = [None] * n if rank == 0 else None
        dist.gather_object(records, gathered, dst=0)
    except RuntimeError as err:  # gloo: connection closed by peer, or the timeout
        raise TokenRingError(f"agent {rank}: the token ring broke at iteration {k} (token last "
                             f"with agent {holder}): {type(err).__name__}: {err}") from err
    if rank != 0:
        return None
    merged = sorted((r for part in gathered for r in part), key=lambda r: r[0])
    result = {"nodes": torch.tensor(_nodes_of(gathered), dtype=torch.int64),
              "theta": torch.stack([t for _, t in merged])}
    if cfg.out:
        torch.save(result, cfg.out)
    return result


def _nodes_of(gathered) -> list[int]:
    """The node of every iteration: the rank that recorded it."""
    owner = {k: r for r, part in enumerate(gathered) for k, _ in part}
    return [owner[k] for k in sorted(owner)]


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
            from optimizers.srrw import LogisticProblem
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
