"""Flow matching: the one place that fixes the time convention.

Convention (the same as diffusers' SD3/FLUX and as MIRO's loss, written with the noise level t):

    x_t = (1 - t) * x_0 + t * eps,      t in [0, 1],  x_0 = data,  eps ~ N(0, I)
    t = 0 is data, t = 1 is pure noise.
    velocity  v = d x_t / d t = eps - x_0     (the regression target of the network)

Sampling integrates dx/dt = v from t = 1 (noise) down to t = 0 (data):  x <- x + (t_next - t) * v.
The network receives t itself (the noise level, diffusers' ``sigma``); MIRO's code conditions on the
signal level gamma = 1 - t, which is the same information.  Sampling grids match
``FlowMatchEulerDiscreteScheduler`` (see ``schedule.flow_sigmas``).
"""

from miro.flow.loss import loss_per_time_bin, velocity_loss
from miro.flow.path import LinearPath, PathSample
from miro.flow.schedule import flow_sigmas, shift_time
from miro.flow.solvers import euler_step, heun_step, integrate
from miro.flow.timesteps import TimeSampler

__all__ = [
    "LinearPath",
    "PathSample",
    "TimeSampler",
    "euler_step",
    "flow_sigmas",
    "heun_step",
    "integrate",
    "loss_per_time_bin",
    "shift_time",
    "velocity_loss",
]
