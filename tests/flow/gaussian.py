"""Closed forms for data x_0 ~ N(mu, s^2) (per dimension) on the linear path x_t = (1-t) x_0 + t eps."""



def marginal_var(t, s):
    return (1 - t) ** 2 * s**2 + t**2


def optimal_velocity(x, t, mu, s):
    """E[eps - x_0 | x_t = x]."""
    t = t.reshape(-1, *([1] * (x.dim() - 1)))
    return -mu + (t - (1 - t) * s**2) / marginal_var(t, s) * (x - (1 - t) * mu)


def irreducible_loss(t, s):
    """E[(eps - x_0 - v*)^2] per dimension at noise level t: the conditional variance."""
    return 1 + s**2 - (t - (1 - t) * s**2) ** 2 / marginal_var(t, s)


def exact_map(x1, mu, s):
    """Where the probability-flow ODE started at x_1 (t = 1) lands at t = 0."""
    return mu + s * x1
