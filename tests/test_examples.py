"""The examples run end to end (briefly) and produce their outputs."""

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(tmp_path, script, *args, timeout):
    """``examples/<script>`` run with ``args`` and ``--out tmp_path`` from ``tmp_path``; its
    exit status must be 0 (the message shows stderr's tail)."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args, "--out",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_quickstart_runs(tmp_path):
    proc = run_example(tmp_path, "quickstart.py", "--epochs", "2", "--seeds", "1", timeout=120)
    png = tmp_path / "quickstart.png"
    assert png.is_file() and png.stat().st_size > 0
    rows = [line.split() for line in proc.stdout.splitlines()]
    names = [r[0] for r in rows if len(r) > 1 and r[1] in ("1e-03", "5e-04")]
    assert names == ["DiffGrad", "Adam", "Adam"], proc.stdout


def test_score_sde_2d_runs(tmp_path):
    proc = run_example(tmp_path, "score_sde_2d.py", "--iters", "30", "--steps", "10", "--samples",
                       "200", timeout=120)
    png = tmp_path / "score_sde_2d.png"
    assert png.is_file() and png.stat().st_size > 0
    assert "energy distance to data" in proc.stdout, proc.stdout


def test_srrw_graph_runs(tmp_path):
    proc = run_example(tmp_path, "srrw_graph.py", "--quick", "--no-progress", timeout=60)
    for name in ("srrw_variance.png", "srrw_optimization.png"):
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 0
    assert "closed form" in proc.stdout and "SRRW alpha=5" in proc.stdout, proc.stdout


def run_srrw_distributed(tmp_path, *args):
    """examples/srrw_distributed.py started by plain python, without torchrun's variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, str(ROOT / "examples" / "srrw_distributed.py"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_srrw_distributed_without_torchrun_says_how_to_launch_it(tmp_path):
    script = str(ROOT / "examples" / "srrw_distributed.py")
    proc = run_srrw_distributed(tmp_path, "--steps", "50", "--alpha", "2")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "RANK" in proc.stderr and "WORLD_SIZE" in proc.stderr, proc.stderr
    # the exact command that runs what was asked, with the same script path and options
    command = f"torchrun --standalone --nproc_per_node 4 {script} --steps 50 --alpha 2"
    assert command in [line.strip() for line in proc.stderr.splitlines()], proc.stderr


def test_srrw_distributed_help_describes_the_example_and_every_option(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import srrw_distributed as example
    finally:
        sys.path.remove(str(ROOT / "examples"))
    proc = run_srrw_distributed(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "torchrun --standalone --nproc_per_node 4" in proc.stdout   # how to run it
    assert "TokenRingError" in proc.stdout                             # the whole description
    options = [a for a in example.build_parser()._actions if a.dest != "help"]
    assert {a.dest for a in options} == {f.name for f in fields(example.Config)}
    for action in options:
        assert action.option_strings[0] in proc.stdout
        assert action.help and len(action.help.split()) >= 3, action.dest


def test_score_sde_2d_figure_labels_every_panel(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import torch
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import score_sde_2d as example
    finally:
        sys.path.remove(str(ROOT / "examples"))
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)   # keep the figure plot() closes
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(50, 2, generator=gen)
    results = {name: dict(x=torch.randn(50, 2, generator=gen), nfe=10, ed=0.01)
               for name in ("Euler-Maruyama (reverse SDE)", "Heun (probability-flow ODE)")}
    paths = torch.randn(6, 5, 2, generator=gen)
    example.plot(data, results, lambda x, t: -x, paths, [0.5] * 10, tmp_path / "f.png")
    (fig,) = kept
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4
    assert all(ax.get_xlabel() and ax.get_ylabel() and len(ax.get_xticks()) for ax in panels)
    fig.clf()


def test_policy_gradient_cartpole_runs(tmp_path):
    proc = run_example(tmp_path, "policy_gradient_cartpole.py", "--quick", "--no-progress",
                       timeout=120)
    png = tmp_path / "policy_gradient_cartpole.png"
    assert png.is_file() and png.stat().st_size > 0
    for method in ("vanilla PG", "NSGDM", "N-PG-IGT", "HARPG", "N-HARPG"):
        assert f"CartPole-v1  {method}" in proc.stdout, proc.stdout


def test_policy_gradient_training_stops_when_the_weights_diverge(monkeypatch):
    """A step that leaves NaN weights ends the run (the benchmark reports it as diverged)
    instead of failing inside the next rollout."""
    import math

    import torch

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    from policy_gradient_cartpole import train

    class Poisoned(torch.optim.SGD):
        def step(self, closure=None):
            loss = super().step(closure)
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(math.nan)
            return loss

    curve = train("CartPole-v1", "poisoned", 0, 40, 4, 0.99,
                  methods={"poisoned": (lambda ps, g: Poisoned(ps, lr=0.1), True)})
    assert [n for n, _ in curve] == [4]


def test_online_sea_runs(tmp_path):
    proc = run_example(tmp_path, "online_sea.py", "--quick", "--no-progress", timeout=120)
    for name in ("online_sea_regret.png", "online_sea_portfolio.png"):
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 0
    assert "optimistic OMD" in proc.stdout and "BCRP (hindsight)" in proc.stdout, proc.stdout
    # the best constant rebalanced portfolio is the best of the strategies in hindsight
    rows = {line[:32].strip(): line.split()[-1] for line in proc.stdout.splitlines()
            if line.startswith(("optimistic OMD (entropy)", "exponentiated gradient",
                                "uniform CRP", "best single asset"))}
    assert len(rows) == 4 and all(float(v) >= -1e-6 for v in rows.values()), rows


def test_sparse_regression_runs(tmp_path):
    proc = run_example(tmp_path, "sparse_regression.py", "--quick", "--no-progress", timeout=120)
    png = tmp_path / "sparse_regression.png"
    assert png.is_file() and png.stat().st_size > 0
    found = [line for line in proc.stdout.splitlines() if "true support found" in line]
    assert len(found) == 5 and all("found 5/5" in line for line in found), proc.stdout


def import_example(name):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "examples"))


def test_sso_imitation_runs(tmp_path):
    proc = run_example(tmp_path, "sso_imitation.py", "--quick", "--no-progress", timeout=120)
    png = tmp_path / "sso_imitation.png"
    assert png.is_file() and png.stat().st_size > 0
    rows = [line for line in proc.stdout.splitlines()
            if line.startswith(("SSO (m=1) ", "SSO (m=10) ", "SSO (m=100) ", "SGD ", "Adam "))]
    assert len(rows) == 5 and all(line.count("/2)") == 2 for line in rows), proc.stdout


def test_sso_imitation_expert_balances_the_full_episode():
    import gymnasium
    import torch
    from stochstep.optimizers.policy_gradient import rollout
    example = import_example("sso_imitation")
    env = gymnasium.make_vec("CartPole-v1", num_envs=10, vectorization_mode="sync")
    batch = rollout(env, example.Expert(), 500, generator=torch.Generator().manual_seed(0))
    assert batch.rewards.sum(1).tolist() == [500.0] * 10     # CartPole-v1's limit, every episode
    # the PD rule by hand: theta + 0.5 theta_dot > 0 pushes right (1)
    states = torch.tensor([[0.0, 0.0, 0.1, -0.1], [0.0, 0.0, 0.1, -0.3], [5.0, 5.0, -0.1, 0.3]])
    assert example.expert_actions(states).tolist() == [1, 0, 1]


def test_sso_imitation_reads_the_cost_of_reaching_a_return_off_the_curve():
    import torch
    example = import_example("sso_imitation")
    curve = [(0, 0, 9.0), (40, 1, 150.0), (90, 2, 200.0), (300, 3, 120.0), (800, 4, 500.0)]
    assert example.first_reaching(curve, 195) == (90, 2)
    assert example.first_reaching(curve, 475) == (800, 4)
    assert example.first_reaching(curve, 200) == (90, 2)        # reaching includes equality
    assert example.first_reaching(curve, 501) is None
    other, never = [(0, 0, 20.0), (100, 1, 300.0)], [(0, 0, 20.0), (100, 1, 30.0)]
    # the median seed (the lower of two), with a seed that never reaches counted as slowest
    assert example.summary([other, curve], 195) == f"{90:>9.0f} / {2:>5.0f} (2/2)"
    assert example.summary([never, curve, other], 195) == f"{100:>9.0f} / {1:>5.0f} (2/3)"
    assert example.summary([never, never, curve], 195).strip() == "never (1/3)"
    # step functions: the value of the last evaluation at or before each grid point
    mean, low, high = example.band([curve, other], torch.tensor([0.0, 50.0, 100.0]))
    assert mean.tolist() == [14.5, 85.0, 250.0]
    assert low[0] <= mean[0] <= high[0]


def test_sso_imitation_counts_the_learners_own_interactions(one_thread):
    import gymnasium
    import torch
    from stochstep.optimizers.policy_gradient import policy_for, rollout
    example = import_example("sso_imitation")
    args = example.parse_args(["--quick"])
    curve = example.train("SSO (m=10)", 0, args)
    assert [c for _, c, _ in curve] == list(range(len(curve)))   # one expensive call per update
    # the first call rolls out the initial learner (seed 0) with the sampler seeded 1000: its
    # running steps, and nothing else (no evaluation steps), are the interactions counted
    env = gymnasium.make_vec("CartPole-v1", num_envs=args.envs, vectorization_mode="sync",
                             max_episode_steps=args.horizon)
    policy = policy_for(env, hidden=tuple(args.hidden), generator=torch.Generator().manual_seed(0))
    first = rollout(env, policy, args.horizon, generator=torch.Generator().manual_seed(1000))
    assert curve[1][0] == int(first.mask.sum())
    # the evaluation before any update: the initial learner's greedy return
    eval_env = gymnasium.make_vec("CartPole-v1", num_envs=args.eval_episodes,
                                  vectorization_mode="sync")
    greedy = rollout(eval_env, example.Greedy(policy), 500,
                     generator=torch.Generator().manual_seed(2000))
    assert curve[0][2] == float(greedy.rewards.sum(1).mean())


def _bilevel_example():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import bilevel_hyperparameters as example
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return example


def _small_bilevel_problem(example, tasks=3, lam=1e-2):
    import torch
    args = example.parse_args(["--tasks", str(tasks), "--blocks", "2", "--lam", str(lam)])
    return example.make_problem(args, torch.Generator().manual_seed(0))


def test_bilevel_hyperparameters_runs(tmp_path):
    proc = run_example(tmp_path, "bilevel_hyperparameters.py", "--quick", "--no-progress",
                       timeout=120)
    png = tmp_path / "bilevel_hyperparameters.png"
    assert png.is_file() and png.stat().st_size > 0
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    names = [line[:10].strip() for line in lines[header + 1:header + 5]]
    assert names == ["BSVRB v1", "BSVRB v2", "RSVRB", "reference"], proc.stdout
    start = float(proc.stdout.split("(start ")[1].split(")")[0])
    exact = [float(line[10:].split()[3]) for line in lines[header + 1:header + 4]]
    reference = float(lines[header + 4].split()[2])
    # ten epochs at lr 100 and three full-batch hypergradient steps all lower F(p)
    assert all(value < start for value in exact + [reference]), proc.stdout


def test_bilevel_lower_oracles_match_autograd():
    """The closed-form grad_w g_i and grad^2_ww g_i against torch.func on the objective."""
    import torch
    example = _bilevel_example()
    problem = _small_bilevel_problem(example)
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(len(problem.y_train), generator=gen, dtype=torch.float64)
    w = torch.randn(3, problem.x_train.shape[1], generator=gen, dtype=torch.float64)
    grad, hess = example.lower_gradient_and_hessian(problem, p, w)
    total = lambda w: example.lower_objectives(problem, p, w).sum()   # noqa: E731
    torch.testing.assert_close(grad, torch.func.grad(total)(w))
    full = torch.func.hessian(total)(w)                              # (m, d, m, d)
    torch.testing.assert_close(hess, torch.stack([full[i, :, i] for i in range(3)]))
    assert full[0, :, 1].abs().max() == 0                             # the tasks are separable


def test_bilevel_exact_hypergradient_matches_finite_differences():
    """grad F(p) by implicit differentiation against central differences of F(p) = f(w(p))."""
    import torch
    example = _bilevel_example()
    problem = _small_bilevel_problem(example)
    gen = torch.Generator().manual_seed(2)
    p = torch.randn(len(problem.y_train), generator=gen, dtype=torch.float64)
    value, grad, w = example.exact_hypergradient(problem, p)
    (lower_grad, _) = example.lower_gradient_and_hessian(problem, p, w)
    assert lower_grad.abs().max() < 1e-12                            # w is the argmin
    eps = 1e-5
    for j in (0, 7, 100):
        e = torch.zeros_like(p)
        e[j] = eps
        up, down = (example.upper_objective(problem, example.solve_lower(problem, p + s * e))
                    for s in (1, -1))
        assert abs((up - down).item() / (2 * eps) - grad[j].item()) < 1e-7 * (
            1 + abs(grad[j].item())), j
    assert value == example.upper_objective(problem, w)


def test_bilevel_closure_is_the_authors_per_task_loss():
    """f and g of the sampled tasks against a loop over tasks and examples (HO/main.py)."""
    import math
    import torch
    example = _bilevel_example()
    problem = _small_bilevel_problem(example)
    gen = torch.Generator().manual_seed(3)
    train = example.BatchStream(len(problem.y_train), torch.Generator().manual_seed(4))
    val = example.BatchStream(len(problem.y_val), torch.Generator().manual_seed(4))
    closure = example.make_closure(problem, train, val, batch=5)
    blocks = torch.tensor([0, 2])
    f, g = closure(blocks)
    tr = torch.randperm(len(problem.y_train), generator=torch.Generator().manual_seed(4))[:10]
    va = torch.randperm(len(problem.y_val), generator=torch.Generator().manual_seed(4))[:10]
    p = torch.randn(len(problem.y_train), generator=gen, dtype=torch.float64)
    y = torch.randn(2, problem.x_train.shape[1], generator=gen, dtype=torch.float64)
    want_f, want_g = [], []
    for row, task in enumerate(blocks.tolist()):
        s = problem.sigma[task].item()
        log_loss = lambda x, label: math.log1p(math.exp(-label / s * y[row].dot(x).item()))  # noqa
        batch_tr, batch_va = tr[5 * row:5 * row + 5], va[5 * row:5 * row + 5]
        want_f.append(sum(log_loss(problem.x_val[k], problem.y_val[k].item())
                          for k in batch_va) / 5)
        want_g.append(sum(1 / (1 + math.exp(-p[j].item()))
                          * log_loss(problem.x_train[j], problem.y_train[j].item())
                          for j in batch_tr) / 5 + problem.lam / 2 * y[row].dot(y[row]).item())
    torch.testing.assert_close(f([p], y), torch.tensor(want_f, dtype=torch.float64))
    torch.testing.assert_close(g([p], y), torch.tensor(want_g, dtype=torch.float64))
    torch.testing.assert_close(f([p], y), f([p], y))         # the same minibatch on every call


def test_bilevel_batch_stream_passes_are_permutations():
    import torch
    example = _bilevel_example()
    stream = example.BatchStream(7, torch.Generator().manual_seed(0))
    drawn = torch.cat([stream.take(3) for _ in range(7)])     # three passes exactly
    for k in range(3):
        assert sorted(drawn[7 * k:7 * k + 7].tolist()) == list(range(7))
    assert stream.epochs == 3


def test_entropic_ot_quick_runs(tmp_path):
    """Quick mode works with or without POT (ours alone then, and it says so)."""
    proc = run_example(tmp_path, "entropic_ot.py", "--quick", timeout=120)
    png = tmp_path / "entropic_ot.png"
    assert png.is_file() and png.stat().st_size > 0
    assert proc.stdout.count("ours (auto): marginal error") == 2, proc.stdout
    # both regimes reach the default tolerance 1e-9 with "auto"; the hard one through Newton
    auto = [line for line in proc.stdout.splitlines() if "ours (auto)" in line]
    assert all(float(line.split("marginal error ")[1].split()[0]) <= 1e-9 for line in auto)
    assert "+ 0 Newton" in auto[0] and "+ 0 Newton" not in auto[1], proc.stdout


def test_convex_relu_quick_checks_the_identity_and_the_lower_bound(tmp_path):
    proc = run_example(tmp_path, "convex_relu.py", "--quick", "--no-progress", timeout=180)
    for name in ("objective", "admm", "robust"):
        png = tmp_path / f"convex_relu_{name}.png"
        assert png.is_file() and png.stat().st_size > 0
    result = json.loads((tmp_path / "convex_relu.json").read_text())
    (r,) = result["comparisons"]
    # the exported network's loss + beta/2 (||W||^2 + ||b||^2 + ||a||^2), computed with torch's
    # layers, equals the convex optimum that ConvexReLU computes from the masked program
    assert r["identity_relative_difference"] < 1e-7
    assert r["network_objective"] == pytest.approx(r["convex_objective"], rel=1e-7)
    assert r["adam_patterns_network_objective"] == pytest.approx(r["adam_patterns_objective"],
                                                                 rel=1e-7)
    # the reported sampling gap is the best Adam run minus the convex optimum
    best = min(r["adam_objectives"])
    assert r["adam_best_minus_convex"] == pytest.approx(best - r["convex_objective"], abs=1e-9)
    # the best Adam network is feasible for the program on its own patterns: that optimum is a
    # lower bound for every run
    assert r["adam_patterns_objective"] <= best * (1 + 1e-7)
    assert len(r["adam_objectives"]) == 4 and 0 <= r["adam_best_patterns_outside"] <= r[
        "adam_best_active_neurons"]
    admm = result["admm"]
    assert len(admm["primal"]) == admm["iterations"] == 20
    (robust,) = result["robust"]
    assert set(robust["accuracy"]) == {"convex, standard", "convex, robust",
                                       "Adam, PGD training"}
    for clean, attacked in robust["accuracy"].values():
        assert 0 <= attacked <= clean <= 1       # PGD starts inside the box: never helps
    assert "convex on best Adam net's patterns" in proc.stdout, proc.stdout


def test_light_sb_runs(tmp_path):
    proc = run_example(tmp_path, "light_sb.py", "--quick", timeout=60)
    png = tmp_path / "light_sb.png"
    assert png.is_file() and png.stat().st_size > 0
    assert "energy distance to target data" in proc.stdout, proc.stdout
