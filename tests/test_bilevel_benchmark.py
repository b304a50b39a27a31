"""The bilevel benchmark's contenders compute the same quantities, and its quick path runs."""

import torch

from benchmarks import bilevel as bench
from stochstep.optimizers.bilevel import block_oracles


def test_the_loop_computes_the_batched_oracles_block_by_block(one_thread):
    opt, closure = bench.build(m=30, dim_y=4, count=6)
    blocks = torch.tensor([1, 4, 9, 16, 20, 29])
    rows, G, G_prev = bench.looped_oracles(opt, closure, blocks)
    f, g = closure(blocks)
    state, x = opt.block_state, opt.param_groups[0]["params"]
    now = block_oracles(f, g, x, opt.lower[blocks])
    before = block_oracles(f, g, [opt.state[p]["previous"] for p in x], state["previous"][blocks])
    hvp, G_batched = now.products(state["v"][blocks])
    hvp_b, G_batched_prev = before.products(state["previous_v"][blocks])
    torch.testing.assert_close(rows["grad_y_g"], now.grad_y_g)
    torch.testing.assert_close(rows["grad_y_g_prev"], before.grad_y_g)
    torch.testing.assert_close(rows["residual"], hvp - now.grad_y_f)
    torch.testing.assert_close(rows["residual_prev"], hvp_b - before.grad_y_f)
    torch.testing.assert_close(G[0], G_batched[0])
    torch.testing.assert_close(G_prev[0], G_batched_prev[0])


def test_quick_run_reports_the_target(one_thread):
    section = bench.run(rounds=2, quick=True)
    assert section.startswith("## bilevel")
    assert "| 1000 | 10 | 100 |" in section
    assert "at m = 1000, I = 100, dim_y = 10" in section
    assert "python -m benchmarks bilevel --rounds 2 --quick" in section
