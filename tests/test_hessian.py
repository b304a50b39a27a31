"""Hessian trace / Lanczos / SLQ against the exact Hessian of small seeded problems."""

import math

import pytest
import torch

from stochstep.theory_checks import (hessian_trace, loss_from_model, spectral_density,
                                     top_eigenvalues)
from stochstep.theory_checks.hessian import rademacher


pytestmark = pytest.mark.usefixtures("one_thread")  # many small tensor ops


def make_mlp(seed=0, d_in=5, hidden=8, d_out=3, batch=32, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    model = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(),
                                torch.nn.Linear(hidden, d_out)).to(dtype)
    torch.random.set_rng_state(torch_state)  # leave the global RNG as it was
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
    x = torch.randn(batch, d_in, generator=gen, dtype=dtype)
    y = torch.randint(0, d_out, (batch,), generator=gen)
    return model, x, y


def exact_hessian(loss_fn, params):
    sizes = [p.numel() for p in params]
    flat0 = torch.cat([p.reshape(-1) for p in params])

    def flat_loss(flat):
        parts = [c.view_as(p) for c, p in zip(flat.split(sizes), params)]
        return loss_fn(parts)

    return torch.func.hessian(flat_loss)(flat0)


@pytest.fixture(scope="module")
def mlp_problem():
    model, x, y = make_mlp()
    loss_fn, params = loss_from_model(model, torch.nn.CrossEntropyLoss(), (x, y))
    H = exact_hessian(loss_fn, params)
    return loss_fn, params, H, torch.linalg.eigvalsh(H)


def test_trace_within_three_standard_errors(mlp_problem):
    loss_fn, params, H, _ = mlp_problem
    est, se = hessian_trace(loss_fn, params, probes=200,
                            generator=torch.Generator().manual_seed(1))
    exact = torch.trace(H).item()
    assert se > 0
    assert abs(est - exact) <= 3 * se, (est, exact, se)


def quadratic(seed=0, n=6):
    """0.5 x^T H x with a dense symmetric H (so Hutchinson's probes do not all agree)."""
    a = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    h = a + a.T
    return (lambda ps: 0.5 * ps[0] @ h @ ps[0]), [torch.zeros(n, dtype=torch.float64)], h


def test_trace_and_standard_error_by_hand():
    # The docstring: the mean of z_i^T H z_i over the m probes drawn, and s.e. = s_z / sqrt(m)
    # with s_z their sample standard deviation. The probes are the Rademacher vectors the
    # module draws, one per HVP call, from the same generator.
    loss_fn, params, h = quadratic()
    m = 25
    est, se = hessian_trace(loss_fn, params, probes=m, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    z = torch.cat([rademacher((1, 6), g, torch.float64, "cpu") for _ in range(m)])
    q = ((z @ h) * z).sum(1)
    assert est == pytest.approx(q.mean().item(), rel=1e-12)
    assert se == pytest.approx(q.std().item() / math.sqrt(m), rel=1e-12)


def test_standard_error_matches_the_estimators_exact_spread():
    # For Rademacher probes Var(z^T H z) = 2 sum_{j != k} H_jk^2, so the s.e. of the mean of
    # m probes is sqrt(2 sum_{j != k} H_jk^2 / m), whatever the draws.
    loss_fn, params, h = quadratic(seed=3)
    m = 400
    off = h - torch.diag(h.diagonal())
    exact_se = math.sqrt(2 * (off**2).sum().item() / m)
    est, se = hessian_trace(loss_fn, params, probes=m, batch_size=50,
                            generator=torch.Generator().manual_seed(4))
    assert se == pytest.approx(exact_se, rel=0.15)
    assert abs(est - torch.trace(h).item()) < 4 * exact_se


def test_trace_batched_and_vmap_agree_with_loop(mlp_problem):
    loss_fn, params, _, _ = mlp_problem
    runs = [hessian_trace(loss_fn, params, probes=10, batch_size=b, method=m,
                          generator=torch.Generator().manual_seed(3))
            for b, m in [(1, "autograd"), (10, "autograd"), (4, "vmap")]]
    for r in runs[1:]:
        assert r.estimate == pytest.approx(runs[0].estimate, rel=1e-10)
        assert r.stderr == pytest.approx(runs[0].stderr, rel=1e-8)


def test_trace_is_reproducible_and_leaves_global_rng_alone(mlp_problem):
    loss_fn, params, _, _ = mlp_problem
    state = torch.random.get_rng_state()
    a = hessian_trace(loss_fn, params, probes=5, generator=torch.Generator().manual_seed(7))
    b = hessian_trace(loss_fn, params, probes=5, generator=torch.Generator().manual_seed(7))
    assert a == b
    assert torch.equal(state, torch.random.get_rng_state())


def test_single_probe_has_nan_stderr(mlp_problem):
    loss_fn, params, _, _ = mlp_problem
    est, se = hessian_trace(loss_fn, params, probes=1, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(est) and math.isnan(se)


@pytest.mark.parametrize("which", ["largest", "smallest"])
@pytest.mark.parametrize("k", [1, 3])
def test_lanczos_matches_eigvalsh(mlp_problem, which, k):
    loss_fn, params, _, evals = mlp_problem
    n = evals.numel()
    got = top_eigenvalues(loss_fn, params, k=k, which=which, iters=60,
                          generator=torch.Generator().manual_seed(2))
    want = evals.flip(0)[:k] if which == "largest" else evals[:k]
    assert got.shape == (k,) and n > 60
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * evals.abs().max().item())


def test_lanczos_eigenvectors_are_eigenvectors(mlp_problem):
    loss_fn, params, H, evals = mlp_problem
    vals, vecs = top_eigenvalues(loss_fn, params, k=2, iters=60, eigenvectors=True,
                                 generator=torch.Generator().manual_seed(2))
    for lam, vec in zip(vals, vecs):
        v = torch.cat([c.reshape(-1) for c in vec])
        assert v.norm().item() == pytest.approx(1.0, rel=1e-8)
        torch.testing.assert_close(H @ v, lam * v, rtol=0, atol=1e-6 * evals.abs().max().item())


def test_lanczos_float32_params_with_float64_option():
    model, x, y = make_mlp(seed=4, dtype=torch.float32)
    loss_fn, params = loss_from_model(model, torch.nn.CrossEntropyLoss(), (x, y))
    H = exact_hessian(loss_fn, [p.double() for p in params])
    want = torch.linalg.eigvalsh(H)[-1]
    got = top_eigenvalues(loss_fn, params, iters=60, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))
    assert got.dtype == torch.float64
    assert got[0].item() == pytest.approx(want.item(), rel=1e-6)


def test_lanczos_exact_on_breakdown():
    # H = diag(3, 3, 3, -1, -1): the Krylov space of any start vector has dimension 2.
    d = torch.tensor([3.0, 3.0, 3.0, -1.0, -1.0], dtype=torch.float64)
    loss = lambda ps: 0.5 * (d * ps[0] ** 2).sum()  # noqa: E731
    got = top_eigenvalues(loss, [torch.zeros(5, dtype=torch.float64)], k=5, iters=5,
                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, d.sort(descending=True).values)


def test_slq_density_integrates_to_one_and_mean_matches_trace(mlp_problem):
    loss_fn, params, H, evals = mlp_problem
    n = evals.numel()
    sd = spectral_density(loss_fn, params, iters=30, runs=40,
                          generator=torch.Generator().manual_seed(5))
    assert sd.nodes.shape == sd.weights.shape == (40, 30)
    torch.testing.assert_close(sd.weights.sum(1), torch.ones(40, dtype=torch.float64))
    assert torch.trapezoid(sd.density, sd.grid).item() == pytest.approx(1.0, abs=1e-9)
    per_run = (sd.nodes * sd.weights).sum(1)  # each a Hutchinson estimate of tr(H) / n
    se = per_run.std().item() / math.sqrt(40)
    assert abs(per_run.mean().item() - torch.trace(H).item() / n) <= 3 * se
    grid_mean = torch.trapezoid(sd.grid * sd.density, sd.grid).item()
    assert grid_mean == pytest.approx(per_run.mean().item(), rel=1e-6, abs=1e-9)
    # the extreme nodes converge to the extreme eigenvalues
    assert sd.nodes.max().item() == pytest.approx(evals[-1].item(), rel=1e-6)


def test_slq_full_krylov_recovers_spectrum():
    d = torch.linspace(-1.0, 4.0, 12, dtype=torch.float64)
    loss = lambda ps: 0.5 * (d * ps[0] ** 2).sum()  # noqa: E731
    sd = spectral_density(loss, [torch.zeros(12, dtype=torch.float64)], iters=12,
                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sd.nodes[0], d)


def test_closure_with_regularizer():
    model, x, y = make_mlp(seed=2)
    base, params = loss_from_model(model, torch.nn.CrossEntropyLoss(), (x, y))
    lam = 0.7

    def loss_fn(ps):  # not criterion(model(x), y): an L2 penalty adds lam * 2 to each eigenvalue
        return base(ps) + lam * sum((p ** 2).sum() for p in ps)

    H = exact_hessian(loss_fn, params)
    H0 = exact_hessian(base, params)
    torch.testing.assert_close(H, H0 + 2 * lam * torch.eye(H.shape[0], dtype=H.dtype))
    evals = torch.linalg.eigvalsh(H)
    got = top_eigenvalues(loss_fn, params, k=2, which="smallest", iters=60,
                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, evals[:2], rtol=1e-6, atol=1e-8)
    est, se = hessian_trace(loss_fn, params, probes=100, generator=torch.Generator().manual_seed(0))
    assert abs(est - torch.trace(H).item()) <= 3 * se


def test_model_helper_equals_closure_and_averages_batches():
    model, x, y = make_mlp(seed=3, batch=30)
    crit = torch.nn.CrossEntropyLoss()
    names = [name for name, _ in model.named_parameters()]

    def closure(ps):
        return crit(torch.func.functional_call(model, dict(zip(names, ps)), (x,)), y)

    single, params = loss_from_model(model, crit, (x, y))
    batches = [(x[:10], y[:10]), (x[10:25], y[10:25]), (x[25:], y[25:])]  # unequal sizes
    listed, _ = loss_from_model(model, crit, batches)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    loaded, _ = loss_from_model(model, crit, loader)
    ref = closure(params)
    for fn in (single, listed, loaded):
        torch.testing.assert_close(fn(params), ref)
    H = exact_hessian(closure, params)
    torch.testing.assert_close(exact_hessian(listed, params), H)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert hessian_trace(single, params, probes=5, generator=g()) == \
        hessian_trace(closure, params, probes=5, generator=g())
    torch.testing.assert_close(top_eigenvalues(loaded, params, k=2, iters=40, generator=g()),
                               top_eigenvalues(closure, params, k=2, iters=40, generator=g()))


def test_model_helper_skips_frozen_and_keeps_model_untouched():
    model, x, y = make_mlp(seed=1)
    model[0].weight.requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    loss_fn, params = loss_from_model(model, torch.nn.CrossEntropyLoss(), (x, y))
    assert [tuple(p.shape) for p in params] == [(8,), (3, 8), (3,)]
    top_eigenvalues(loss_fn, params, iters=5, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_float64_option_casts_model_data():
    model, x, y = make_mlp(seed=5, dtype=torch.float32)
    loss_fn, params = loss_from_model(model, torch.nn.CrossEntropyLoss(), (x, y))
    est, _ = hessian_trace(loss_fn, params, probes=3, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    est32, _ = hessian_trace(loss_fn, params, probes=3, generator=torch.Generator().manual_seed(0))
    assert est == pytest.approx(est32, rel=1e-4)


def test_progress_bar_runs(capsys):
    loss = lambda ps: (ps[0] ** 4).sum()  # noqa: E731
    p = [torch.ones(4)]
    hessian_trace(loss, p, probes=3, progress=True, generator=torch.Generator().manual_seed(0))
    spectral_density(loss, p, iters=3, progress=True, generator=torch.Generator().manual_seed(0))
    assert "hutchinson" in capsys.readouterr().err


# ----------------------------------------------------------------------------- errors

def _quad(ps):
    return (ps[0] ** 2).sum()


@pytest.mark.parametrize("call, match", [
    (lambda: hessian_trace(lambda ps: ps[0] ** 2, [torch.ones(3)]), "loss_fn"),
    (lambda: top_eigenvalues(lambda ps: ps[0] * 2, [torch.ones(3)]), "loss_fn"),
    (lambda: spectral_density(lambda ps: 1.0, [torch.ones(3)]), "loss_fn"),
    (lambda: hessian_trace(_quad, [torch.ones(3)], probes=0), "probes"),
    (lambda: hessian_trace(_quad, [torch.ones(3)], probes=2.5), "probes"),
    (lambda: hessian_trace(_quad, [torch.ones(3)], batch_size=0), "batch_size"),
    (lambda: hessian_trace(_quad, [torch.ones(3)], method="magic"), "method"),
    (lambda: hessian_trace(_quad, [torch.ones(3, dtype=torch.long)]), r"params\[0\]"),
    (lambda: hessian_trace(_quad, torch.ones(3)), "params"),
    (lambda: hessian_trace(_quad, []), "params"),
    (lambda: hessian_trace(_quad, [torch.ones(3)], generator=0), "generator"),
    (lambda: hessian_trace(_quad, [torch.ones(3)], dtype=torch.long), "dtype"),
    (lambda: top_eigenvalues(_quad, [torch.ones(3)], k=4, iters=20), "k must be <= the number"),
    (lambda: top_eigenvalues(_quad, [torch.ones(3)], k=0), "k"),
    (lambda: top_eigenvalues(_quad, [torch.ones(30)], k=5, iters=3), "k must be <= iters"),
    (lambda: top_eigenvalues(_quad, [torch.ones(3)], which="magnitude"), "which"),
    (lambda: spectral_density(_quad, [torch.ones(3)], runs=0), "runs"),
    (lambda: spectral_density(_quad, [torch.ones(3)], iters=0), "iters"),
    (lambda: spectral_density(_quad, [torch.ones(3)], sigma=-1.0), "sigma"),
])
def test_bad_input_raises_value_error_naming_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_model_helper_errors():
    model = torch.nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        loss_from_model(model, torch.nn.MSELoss(), (torch.ones(1, 2), torch.ones(1, 1)))
    with pytest.raises(ValueError, match="model"):
        loss_from_model(lambda x: x, torch.nn.MSELoss(), (torch.ones(1, 2), torch.ones(1, 1)))
    with pytest.raises(ValueError, match="data"):
        loss_from_model(torch.nn.Linear(2, 1), torch.nn.MSELoss(), [])
