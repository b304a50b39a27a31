"""SA-SRRW as one process per agent (optimizers.srrw.run_token_ring and
examples/srrw_distributed.py) on gloo/localhost.

Four agents on a 4-node graph reproduce the single-process `simulate_token` bit for bit from the
same seed; when one agent raises or is killed, the others stop with `TokenRingError` well within
the process-group timeout instead of hanging.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # spawned children inherit sys.path
import srrw_distributed as example  # noqa: E402

from stochstep.optimizers.srrw import LogisticProblem, simulate_token  # noqa: E402

WORLD = 4


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ~6-10 s on 2 shared cores: four child interpreters import torch
@pytest.mark.slow
@pytest.mark.parametrize("base", ["srw", "mhrw"])  # mhrw: self-loops keep the token in place
def test_four_agents_reproduce_the_simulation_bit_for_bit(tmp_path, base):
    cfg = example.Config(steps=60, seed=3, alpha=4.0, gamma_exponent=0.7, lr_exponent=0.9,
                         base=base, lr=1.5, timeout_s=30, out=str(tmp_path / "run.pt"))
    mp.spawn(example.spawn_entry, args=(WORLD, _free_port(), asdict(cfg)), nprocs=WORLD,
             join=True)
    got = torch.load(tmp_path / "run.pt")

    prob = LogisticProblem.generate(WORLD, samples=cfg.samples, dim=cfg.dim, reg=cfg.reg,
                                    seed=cfg.seed)
    sim = simulate_token(example.ring_graph(WORLD), prob.grad, torch.zeros(cfg.dim), runs=1,
                         steps=cfg.steps, lr=cfg.lr, alpha=cfg.alpha,
                         gamma_exponent=cfg.gamma_exponent, lr_exponent=cfg.lr_exponent,
                         base=cfg.base, generator=torch.Generator().manual_seed(cfg.seed))
    assert torch.equal(got["nodes"], sim.nodes[:, 0])
    assert len(set(got["nodes"].tolist())) == WORLD  # every agent held the token
    assert torch.equal(got["theta"], sim.theta[1:, 0])


def _agent(rank: int, world: int, port: int, cfg: dict, out_dir: str) -> None:
    """Run one agent; record how it ended (the parent checks every agent's own outcome)."""
    try:
        example.spawn_entry(rank, world, port, cfg)
    except BaseException as err:  # noqa: BLE001  (recorded, then exit 1)
        Path(out_dir, f"rank{rank}.txt").write_text(f"{type(err).__name__}: {err}")
        os._exit(1)
    Path(out_dir, f"rank{rank}.txt").write_text("ok")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_failing_agent_stops_the_others_with_a_clear_error(tmp_path, mode):
    timeout = 20.0
    cfg = example.Config(steps=400, seed=1, timeout_s=timeout, fail_rank=2, fail_step=25,
                         fail_mode=mode)
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_agent, args=(r, WORLD, port, asdict(cfg), str(tmp_path)))
             for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 30 + timeout  # start-up on 2 busy cores, plus the timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"agents {hung} still running after the timeout"

    outcome = {r: (tmp_path / f"rank{r}.txt").read_text()
               if (tmp_path / f"rank{r}.txt").exists() else None for r in range(WORLD)}
    if mode == "kill":
        assert procs[2].exitcode == -9 and outcome[2] is None
    else:
        assert procs[2].exitcode == 1 and "injected failure" in outcome[2]
    for r in (0, 1, 3):
        assert procs[r].exitcode == 1, (r, outcome[r])
        assert outcome[r].startswith("TokenRingError") and "token ring broke" in outcome[r]


# -- optimizers.srrw.run_token_ring, the library loop the example runs ----------------------
def _ring_agent(rank: int, world: int, port: int, cfg: dict, out_dir: str) -> None:
    """One agent of run_token_ring; ``cfg["mode"]`` injects a failure on ``cfg["fail_rank"]``
    from iteration ``cfg["fail_step"]`` on: "raise" (a RuntimeError in grad_fn, the kind
    torch itself raises), "kill" (SIGKILL, like a crash) or "mismatch" (the agent was started
    with another alpha, so the token it receives is refused)."""
    import datetime
    import signal

    import torch.distributed as dist

    from stochstep.optimizers.srrw import logistic_grad, logistic_shard, run_token_ring

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=cfg["timeout"]))
    features, labels = logistic_shard(rank, samples=cfg["samples"], dim=cfg["dim"],
                                      seed=cfg["seed"])
    failing = rank == cfg["fail_rank"]

    def grad_fn(theta, n):
        if failing and n >= cfg["fail_step"]:
            if cfg["mode"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if cfg["mode"] == "raise":
                raise RuntimeError(f"injected failure in grad_fn at iteration {n}")
        return logistic_grad(theta[None], features[None], labels[None], cfg["reg"])[0]

    alpha = cfg["alpha"] + (1.0 if failing and cfg["mode"] == "mismatch" else 0.0)
    try:
        out = run_token_ring(example.ring_graph(world), grad_fn, torch.zeros(cfg["dim"]),
                             steps=cfg["steps"], lr=cfg["lr"], alpha=alpha,
                             gamma_exponent=cfg["gamma_exponent"],
                             lr_exponent=cfg["lr_exponent"], base=cfg["base"],
                             generator=torch.Generator().manual_seed(cfg["seed"]))
    except BaseException as err:  # noqa: BLE001  (recorded, then exit 1)
        Path(out_dir, f"rank{rank}.txt").write_text(f"{type(err).__name__}: {err}")
        os._exit(1)
    if out is not None:
        torch.save(out, Path(out_dir, "run.pt"))
    Path(out_dir, f"rank{rank}.txt").write_text("ok")
    dist.destroy_process_group()


RING = dict(steps=60, seed=3, alpha=4.0, gamma_exponent=0.7, lr_exponent=0.9, base="mhrw",
            lr=1.5, samples=20, dim=3, reg=0.1, timeout=30.0, fail_rank=-1, fail_step=-1,
            mode="none")


def _run_ring(tmp_path, cfg: dict, deadline_s: float):
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_ring_agent, args=(r, WORLD, port, cfg, str(tmp_path)))
             for r in range(WORLD)]
    start = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(max(0.0, start + deadline_s - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    outcome = {r: (tmp_path / f"rank{r}.txt").read_text()
               if (tmp_path / f"rank{r}.txt").exists() else None for r in range(WORLD)}
    return procs, outcome, hung, time.monotonic() - start


@pytest.mark.slow
def test_token_ring_reproduces_the_simulation_bit_for_bit(tmp_path):
    procs, outcome, hung, _ = _run_ring(tmp_path, RING, deadline_s=60 + RING["timeout"])
    assert not hung and all(o == "ok" for o in outcome.values()), outcome
    got = torch.load(tmp_path / "run.pt")
    prob = LogisticProblem.generate(WORLD, samples=RING["samples"], dim=RING["dim"],
                                    reg=RING["reg"], seed=RING["seed"])
    sim = simulate_token(example.ring_graph(WORLD), prob.grad, torch.zeros(RING["dim"]),
                         runs=1, steps=RING["steps"], lr=RING["lr"], alpha=RING["alpha"],
                         gamma_exponent=RING["gamma_exponent"],
                         lr_exponent=RING["lr_exponent"], base=RING["base"],
                         generator=torch.Generator().manual_seed(RING["seed"]))
    assert torch.equal(got["nodes"], sim.nodes[:, 0])
    assert len(set(got["nodes"].tolist())) == WORLD
    assert torch.equal(got["theta"], sim.theta[1:, 0])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raise", "mismatch", "kill"])
def test_token_ring_failures_are_reported_where_they_happen(tmp_path, mode):
    """The agent whose own code failed raises its own error (a RuntimeError from grad_fn is
    not turned into a TokenRingError there); the others raise TokenRingError naming it, at
    once when it could tell them, within the timeout when it was killed."""
    timeout = 20.0
    cfg = {**RING, "steps": 400, "timeout": timeout, "fail_rank": 2, "fail_step": 25,
           "mode": mode}
    procs, outcome, hung, elapsed = _run_ring(tmp_path, cfg, deadline_s=60 + timeout)
    assert not hung, f"agents {hung} still running after the timeout: {outcome}"
    others = (0, 1, 3)
    for r in others:
        assert procs[r].exitcode == 1, (r, outcome[r])
        assert outcome[r].startswith("TokenRingError") and "token ring broke" in outcome[r]
    if mode == "kill":
        assert procs[2].exitcode == -9 and outcome[2] is None
        return
    assert procs[2].exitcode == 1
    if mode == "raise":
        assert outcome[2].startswith("RuntimeError: injected failure in grad_fn"), outcome[2]
    else:
        assert outcome[2].startswith("ValueError") and "alpha=4.0" in outcome[2] and \
            "alpha=5.0" in outcome[2], outcome[2]
    for r in others:  # named, and told through the all_reduce: no waiting for the timeout
        assert "agent(s) [2] raised an error" in outcome[r], outcome[r]
    assert elapsed < 60, elapsed  # spawning 4 interpreters on 2 busy cores, not the timeout
