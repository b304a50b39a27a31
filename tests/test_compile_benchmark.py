"""The compile benchmark's probe counts what it claims: graph breaks, compiled frames and the
recompiles a changing tensor lr causes (backend "eager": no inductor compile, a few seconds)."""

import torch

from benchmarks import compile as bench


class ItemLR(torch.optim.Optimizer):
    """SGD that reads its tensor lr with ``.item()``: a graph break, and a Python float that
    the resumed frame specializes on, so a change of lr compiles it again."""

    def __init__(self, params, lr):
        super().__init__(params, dict(lr=lr))

    def step(self, closure=None):
        group = self.param_groups[0]  # dynamo gives up on a frame that breaks inside a loop
        params = [p.detach() for p in group["params"]]
        lr = group["lr"].item()
        torch._foreach_add_(params, [p.grad for p in group["params"]], alpha=-lr)


def fixed_grad_params():
    setup = bench.Setup(bench.mlp_shapes(), model=False)
    return setup.params()


def test_probe_of_torch_adam_finds_one_graph_and_no_break(one_thread):
    setup = bench.Setup(bench.mlp_shapes(), model=False)
    row = bench.probe(lambda: setup.make(bench.ADAM, compiled=True), budget_s=60)
    assert (row["breaks"], row["graphs"], row["frames"]) == (0, 1, 1), row
    assert (row["late"], row["lr_frames"], row["stopped"]) == (0, 0, False), row


def test_probe_counts_a_break_and_the_recompiles_of_a_changing_lr(one_thread):
    def make():
        lr = torch.tensor(0.1)
        return bench.Contender(ItemLR(fixed_grad_params(), lr), None, lr)

    row = bench.probe(make, budget_s=60)
    assert row["breaks"] == 1 and row["graphs"] == 2, row
    assert row["reasons"] and "item()" in row["reasons"][0], row
    # the new float recompiles the resumed frame (once: dynamo then makes it dynamic)
    assert row["frames"] == 2 and row["late"] == 0 and row["lr_frames"] >= 1, row
    lines = bench.target_lines("x", {"ItemLR": row})
    assert lines == ["(x) ItemLR: 0 breaks MISS, <= 2 frames, lr changing included MISS, "
                     "compiled <= eager MISS"], lines


def test_contenders_get_equal_copies_and_cbo_gets_the_mlp(one_thread):
    setup = bench.Setup(bench.mlp_shapes(), model=True)
    assert bench.mlp_shapes() == [(64, 32), (64,), (64, 64), (64,), (1, 64), (1,)]
    eager, compiled = setup.make("SGLD", compiled=False), setup.make("SGLD", compiled=True)
    assert isinstance(eager.lr, float) and compiled.lr.ndim == 0
    for a, b in zip(eager.opt.param_groups[0]["params"], compiled.opt.param_groups[0]["params"]):
        assert a.data_ptr() != b.data_ptr() and a.grad.data_ptr() != b.grad.data_ptr()
        assert torch.equal(a, b) and torch.equal(a.grad, b.grad)
    cbo = setup.make("CBO", compiled=False)
    assert cbo.opt.model is not setup.model and float(cbo.call()) > 0
    assert bench.skip_reason("CBO", bench.CASES[0]) and not bench.skip_reason("CBO", bench.CASES[1])


def test_benchmark_cli_knows_compile():
    from benchmarks.__main__ import SUITES
    assert SUITES["compile"] == "benchmarks.compile"
