import torch

from miro.flow import LinearPath


def test_endpoints_and_target():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    path = LinearPath()
    s0 = path.sample(x0, torch.zeros(4), eps)
    s1 = path.sample(x0, torch.ones(4), eps)
    torch.testing.assert_close(s0.x_t, x0)
    torch.testing.assert_close(s1.x_t, eps)
    torch.testing.assert_close(s0.target, eps - x0)


def test_target_is_time_derivative():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 5, generator=g, dtype=torch.float64), torch.randn(2, 5, generator=g, dtype=torch.float64)
    t, h = torch.tensor([0.3, 0.7], dtype=torch.float64), 1e-6
    path = LinearPath()
    fd = (path.sample(x0, t + h, eps).x_t - path.sample(x0, t - h, eps).x_t) / (2 * h)
    torch.testing.assert_close(fd, path.sample(x0, t, eps).target)


def test_bad_time_shape():
    import pytest

    with pytest.raises(ValueError, match="shape"):
        LinearPath().sample(torch.zeros(2, 3), torch.zeros(3))
