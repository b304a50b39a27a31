"""The shared core's parts on their own: blocks, grids, integrate, noise, oracles."""

import math

import pytest
import torch

from stochstep.stepping import (Brownian, as_grid, diffgrad_, edm, geometric, hvp, integrate,
                                score_from_log_prob, uniform, value_and_grad)
from stochstep.stepping import kernels


def test_blocks_cover_every_element_once_within_budget(monkeypatch):
    monkeypatch.setattr(kernels, "BLOCK_BYTES", 64 * 4)
    ts = [torch.zeros(10), torch.zeros(300), torch.zeros(7, 3).t(), torch.zeros(0),
          torch.zeros(40), torch.zeros(30), torch.zeros(64)]
    seen = [torch.zeros_like(t) for t in ts]
    sizes = [float(i) for i in range(len(ts))]
    for (chunk,), chunk_sizes in kernels.blocks([seen], sizes):
        assert len(chunk_sizes) == len(chunk)
        # A block holds at most the budget, plus the one small tensor that crosses it.
        assert sum(c.numel() for c in chunk[:-1]) < 64
        for c, s in zip(chunk, chunk_sizes):
            assert c.numel() <= 64 or not c.is_contiguous()
            c.add_(1 + s)
    for s, t in zip(sizes, seen):
        assert torch.equal(t, torch.full_like(t, 1 + s))


def test_blocked_diffgrad_equals_unblocked(monkeypatch):
    shapes = [(1000,), (33, 17), (5,)]
    grads = [torch.randn(s, generator=torch.Generator().manual_seed(7 + i))
             for i, s in enumerate(shapes)]

    def run():
        state = [[torch.randn(s, generator=torch.Generator().manual_seed(i + 10 * k))
                  for i, s in enumerate(shapes)] for k in range(4)]
        state[2] = [v.abs() for v in state[2]]  # exp_avg_sq >= 0
        diffgrad_(state[0], grads, state[1], state[2], state[3], steps=[3.0, 3.0, 1.0],
                  lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8)
        return [t for lst in state for t in lst]

    whole = run()
    monkeypatch.setattr(kernels, "BLOCK_BYTES", 256)
    for x, y in zip(whole, run()):
        assert torch.equal(x, y)


def test_grids():
    assert torch.equal(uniform(0.0, 1.0, 4), torch.tensor([0, 0.25, 0.5, 0.75, 1.0],
                                                          dtype=torch.float64))
    assert uniform(1.0, 0.0, 2)[0] == 1.0
    g = geometric(1e-3, 1.0, 3)
    assert torch.allclose(g, torch.tensor([1e-3, 1e-2, 1e-1, 1.0], dtype=torch.float64))
    e = edm(80.0, 0.002, 10)
    assert e[0] == pytest.approx(80.0) and e[-1] == pytest.approx(0.002) and (e.diff() < 0).all()
    for bad in ([0.0], [0.0, 1.0, 0.5], [[0.0, 1.0]], [0.0, float("nan")], [0.0, 0.0]):
        with pytest.raises(ValueError, match="grid"):
            as_grid(bad)
    with pytest.raises(ValueError, match="steps"):
        uniform(0.0, 1.0, 0)


class Decay:
    """dx = -x dt by explicit Euler (order 1)."""

    order = 1.0

    def step_(self, x, t0, t1, noise):
        x.mul_(1 - (t1 - t0))


def test_integrate_runs_the_grid_and_saves_the_path():
    x0 = torch.ones(3)
    sol = integrate(Decay(), x0, uniform(0.0, 1.0, 10), save_every=4)
    assert sol.times.tolist() == pytest.approx([0.0, 0.4, 0.8, 1.0])
    assert sol.path.shape == (4, 3)
    assert torch.allclose(sol.x, torch.full((3,), 0.9**10))
    assert torch.equal(x0, torch.ones(3))
    with pytest.raises(ValueError, match="save_every"):
        integrate(Decay(), x0, [0.0, 1.0], save_every=0)
    with pytest.raises(ValueError, match="stepper"):
        integrate(object(), x0, [0.0, 1.0])


def test_integrate_order_is_measurable():
    errs = [(integrate(Decay(), torch.ones(1), uniform(0.0, 1.0, n)) - math.exp(-1)).abs().item()
            for n in (50, 100, 200)]
    slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(0.9 < s < 1.1 for s in slopes)


def test_brownian_increments_have_variance_dt_and_replay():
    x = torch.zeros(200_000)
    a = Brownian(torch.Generator().manual_seed(0)).increment(x, 0.5, 0.25)
    b = Brownian(torch.Generator().manual_seed(0)).increment(x, 0.5, 0.25)
    assert torch.equal(a, b)
    assert a.var().item() == pytest.approx(0.25, rel=0.02)
    with pytest.raises(ValueError, match="generator"):
        Brownian(generator=3)


def test_value_and_grad_and_hvp_match_closed_forms():
    a = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)

    def loss(ps):
        x, y = ps
        return 0.5 * x @ a @ x + (y**3).sum()

    x, y = torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    value, (gx, gy) = value_and_grad(loss, [x, y])
    assert value.item() == pytest.approx(0.5 * 3 + 8)
    assert torch.allclose(gx, a @ x) and torch.allclose(gy, 3 * y**2)
    hx, hy = hvp(loss, [x, y], [torch.tensor([1.0, 0.0], dtype=torch.float64),
                                torch.tensor([1.0], dtype=torch.float64)])
    assert torch.allclose(hx, a[:, 0]) and torch.allclose(hy, 6 * y)
    with pytest.raises(ValueError, match="scalar"):
        value_and_grad(lambda ps: ps[0] * 2, [x])


def test_score_from_log_prob_checks_shapes():
    score = score_from_log_prob(lambda x: -0.5 * (x**2).sum(-1))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(score(x), -x)
    with pytest.raises(ValueError, match="log_prob"):
        score_from_log_prob(lambda x: x)(x)


def test_box_muller_normals_are_standard_normal_and_reproducible():
    from scipy import stats

    from stochstep.stepping.noise import Brownian, box_muller_normal
    z = box_muller_normal((100_001,), torch.Generator().manual_seed(0), block=4096)
    assert z.shape == (100_001,) and z.dtype == torch.float64
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert abs(z.mean().item()) < 0.02 and abs(z.var().item() - 1) < 0.02
    # the two values of a pair (one radius, cos and sin) are independent: no correlation, and
    # none between their squares either (a shared radius would correlate those)
    pairs = z[:2 * 4096 * 12].view(12, 2, 4096)
    for a, b in ((pairs[:, 0], pairs[:, 1]), (pairs[:, 0] ** 2, pairs[:, 1] ** 2)):
        assert abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()) < 0.03
    again = box_muller_normal((100_001,), torch.Generator().manual_seed(0), block=4096)
    assert torch.equal(z, again)
    x = torch.zeros(3, 5, dtype=torch.float64)
    assert Brownian(torch.Generator().manual_seed(1), method="box_muller").standard_normal(
        x).shape == (3, 5)
    with pytest.raises(ValueError, match="method"):
        Brownian(method="ziggurat")


@pytest.mark.parametrize("n", [14, 15, 1])
def test_box_muller_follows_its_definition_block_by_block(n):
    from stochstep.stepping.noise import box_muller_normal
    g = torch.Generator().manual_seed(9)
    want = []
    pairs = (n + 1) // 2
    for lo in range(0, pairs, 3):                      # blocks of at most 3 pairs
        u1, u2 = torch.rand(2, min(3, pairs - lo), generator=g, dtype=torch.float64)
        r = torch.sqrt(-2 * torch.log1p(-u1))
        want += [r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)]
    want = torch.cat(want)[:n]
    got = box_muller_normal((n,), torch.Generator().manual_seed(9), block=3)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=1e-15)
    out = torch.empty(n, dtype=torch.float64)
    assert box_muller_normal((n,), torch.Generator().manual_seed(9), block=3, out=out) is out
    assert torch.equal(out, got)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="block"):
            box_muller_normal((n,), torch.Generator(), block=bad)


def test_same_device_lets_an_index_free_device_match_any_index():
    from stochstep.stepping.noise import same_device
    cuda, cuda0, cuda1 = torch.device("cuda"), torch.device("cuda", 0), torch.device("cuda", 1)
    assert same_device(cuda, cuda0) and same_device(cuda1, cuda)
    assert not same_device(cuda0, cuda1) and not same_device(torch.device("cpu"), cuda)


@pytest.mark.parametrize("shape", [(20, 30), (7, 3)])      # an even and an odd count
@pytest.mark.parametrize("method", ["box_muller", "randn"])
def test_normals_drawn_into_out_are_the_same_numbers(shape, method):
    from stochstep.stepping.noise import Brownian
    x = torch.empty(shape, dtype=torch.float64)
    fresh = Brownian(torch.Generator().manual_seed(5), method=method).standard_normal(x)
    out = torch.full(shape, float("nan"), dtype=torch.float64)
    drawn = Brownian(torch.Generator().manual_seed(5), method=method).standard_normal(x, out=out)
    assert drawn is out and torch.equal(drawn, fresh)
    noise = Brownian(torch.Generator().manual_seed(5), method=method)
    for bad in (torch.empty(shape, dtype=torch.float32),
                torch.empty(shape[::-1], dtype=torch.float64).t(),
                torch.empty(shape[0] + 1, shape[1], dtype=torch.float64)):
        with pytest.raises(ValueError, match="out must be"):
            noise.standard_normal(x, out=bad)


def test_generator_none_is_seeded_by_one_draw_from_the_global_rng():
    """torch.manual_seed at the top of a script makes runs with generator=None reproducible:
    make_generator (every generator=None in the package goes there) draws one seed."""
    from stochstep.samplers import ULA
    from stochstep.stepping.noise import make_generator
    torch.manual_seed(0)
    made = make_generator(None)
    after_one_draw = torch.get_rng_state()
    torch.manual_seed(0)
    seed = int(torch.randint(2**63 - 1, ()))
    assert torch.equal(torch.get_rng_state(), after_one_draw)
    assert torch.equal(made.get_state(), torch.Generator().manual_seed(seed).get_state())
    with torch.device("meta"):  # the seed is a CPU draw whatever the default device
        torch.manual_seed(0)
        assert torch.equal(make_generator(None).get_state(), made.get_state())

    def sample(seed):
        torch.manual_seed(seed)
        x = ULA(score=lambda x: -x).sample(torch.zeros(50), step_size=0.1, steps=5)
        return x, torch.get_rng_state()

    (a, state), (b, _), (c, _) = sample(0), sample(0), sample(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, after_one_draw)   # the sampler took one seed, nothing more


def test_set_generator_state_refuses_what_is_not_a_generator_state():
    from stochstep.stepping.noise import set_generator_state
    g = torch.Generator()
    for bad in (g.get_state().float(), g.get_state().reshape(1, -1), [0, 1]):
        with pytest.raises(ValueError, match="generator_state must be a 1-D torch.uint8"):
            set_generator_state(g, bad)
