"""DiffGrad under torch.distributed: DDP and ZeroRedundancyOptimizer match one process.

Two gloo processes on localhost each take half of a fixed batch; the loss on each rank is the
mean over its half, so DDP's gradient average equals the full-batch mean gradient and every
rank's update must equal the single-process update on the full batch.
"""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from stochstep.optimizers import DiffGrad

WORLD_SIZE = 2
STEPS = 5
BATCH = 16  # even, so both halves have the same size and the mean of means is the full mean
# Two runs: DDP + plain DiffGrad (no decay), DDP + ZeRO-sharded DiffGrad (coupled L2 decay).
DDP_KW = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
ZERO_KW = dict(lr=1e-2, betas=(0.8, 0.995), eps=1e-8, weight_decay=5e-2)
# Not bitwise: the all-reduce sums the two ranks' (already halved) gradients in an order, and
# with a rounding, different from the single process's backward through the full-batch mean, so
# gradients differ in the last bits; Adam-style normalisation keeps that at ~1e-16 relative.
TOL = dict(rtol=1e-10, atol=1e-12)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(torch.float64)
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    return model


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4321)
    x = torch.randn(BATCH, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(BATCH, 3, generator=gen, dtype=torch.float64)
    return x, y


def _train(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD_SIZE, timeout=datetime.timedelta(seconds=60))
    try:
        x, y = _data()
        half = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        x, y = x[half], y[half]

        # 1. DDP, every rank holds the full DiffGrad state.
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(model)
        _train(ddp, DiffGrad(ddp.parameters(), **DDP_KW), x, y, STEPS)
        torch.save(_params(model), os.path.join(out_dir, f"ddp_rank{rank}.pt"))

        # 2. DDP + ZeroRedundancyOptimizer: each rank keeps DiffGrad state for its shard only.
        # (Imported here: importing torch.distributed.optim scripts its functional optimizers
        # with the deprecated torch.jit.script, which would fill the parent's warning summary.)
        from torch.distributed.optim import ZeroRedundancyOptimizer
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(model)
        zero = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=DiffGrad, **ZERO_KW)
        _train(ddp, zero, x, y, STEPS)
        torch.save(_params(model), os.path.join(out_dir, f"zero_rank{rank}.pt"))
        zero.consolidate_state_dict(to=0)  # collective: every rank takes part
        if rank == 0:
            torch.save(zero.state_dict(), os.path.join(out_dir, "zero_optim.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


# 12-18 s on 2 cores: two child interpreters import torch and torch.distributed.optim
@pytest.mark.slow
def test_diffgrad_ddp_and_zero_match_single_process(tmp_path):
    # join=True re-raises a child's exception in the parent (and terminates the other child);
    # the 60 s gloo timeout bounds any collective left waiting on a dead peer.
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    x, y = _data()

    # Single-process references on the full batch.
    ref_ddp = _model()
    _train(ref_ddp, DiffGrad(ref_ddp.parameters(), **DDP_KW), x, y, STEPS)
    ref_zero = _model()
    ref_zero_opt = DiffGrad(ref_zero.parameters(), **ZERO_KW)
    _train(ref_zero, ref_zero_opt, x, y, STEPS)
    start = _model().state_dict()

    for name, ref in [("ddp", ref_ddp), ("zero", ref_zero)]:
        for rank in range(WORLD_SIZE):
            got = torch.load(tmp_path / f"{name}_rank{rank}.pt")
            assert got.keys() == ref.state_dict().keys()
            for k, v in ref.state_dict().items():
                assert not torch.equal(v, start[k]), f"{name}: {k} did not move"
                torch.testing.assert_close(got[k], v, **TOL, msg=f"{name} rank {rank}: {k}")

    # The consolidated ZeRO state loads into a fresh single-process DiffGrad ...
    sd = torch.load(tmp_path / "zero_optim.pt")
    resumed = _model()
    resumed.load_state_dict(torch.load(tmp_path / "zero_rank0.pt"))
    resumed_opt = DiffGrad(resumed.parameters(), **ZERO_KW)
    resumed_opt.load_state_dict(sd)
    for p, q in zip(resumed.parameters(), ref_zero.parameters()):
        s, r = resumed_opt.state[p], ref_zero_opt.state[q]
        assert s.keys() == r.keys() == {"step", "exp_avg", "exp_avg_sq", "prev_grad"}
        assert s["step"].dtype == torch.float32 and s["step"].dim() == 0
        assert float(s["step"]) == STEPS
        for k in DiffGrad.state_names:
            torch.testing.assert_close(s[k], r[k], **TOL, msg=f"consolidated {k}")
    for g in resumed_opt.param_groups:
        assert g["betas"] == ZERO_KW["betas"] and g["weight_decay"] == ZERO_KW["weight_decay"]

    # ... and one more full-batch step continues like the reference.
    _train(resumed, resumed_opt, x, y, 1)
    _train(ref_zero, ref_zero_opt, x, y, 1)
    for (k, a), b in zip(resumed.state_dict().items(), ref_zero.state_dict().values()):
        torch.testing.assert_close(a, b, **TOL, msg=f"resumed step: {k}")
    for p, q in zip(resumed.parameters(), ref_zero.parameters()):
        assert float(resumed_opt.state[p]["step"]) == STEPS + 1
        for k in DiffGrad.state_names:
            torch.testing.assert_close(resumed_opt.state[p][k], ref_zero_opt.state[q][k], **TOL)
