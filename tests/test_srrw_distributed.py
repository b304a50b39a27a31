"""SA-SRRW as one process per agent (examples/srrw_distributed.py) on gloo/localhost.

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

from optimizers.srrw import LogisticProblem, simulate_token  # noqa: E402

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
