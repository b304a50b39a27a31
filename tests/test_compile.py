"""One torch.compile'd training step (compiling on CPU costs tens of seconds: one model only)."""

import pytest
import torch

from stochstep.optimizers import DiffGrad


def build():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model, DiffGrad(model.parameters(), lr=1e-2)


@pytest.mark.slow
def test_compiled_training_step_matches_eager():
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(-1, keepdim=True)
    (m_eager, o_eager), (m_comp, o_comp) = build(), build()

    def train_step(model, opt):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    compiled = torch.compile(train_step)
    for _ in range(3):
        train_step(m_eager, o_eager)
        compiled(m_comp, o_comp)
    for a, b in zip(m_eager.parameters(), m_comp.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
