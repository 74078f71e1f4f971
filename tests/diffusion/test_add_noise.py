import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

D = js.diffusion


@pytest.mark.parametrize(
    "sched", [D.VPLinear(), D.VPDiscrete.scaled_linear(), D.FlowMatching(shift=3.0), D.VE()]
)
def test_add_noise_is_the_forward_process(sched):
    x0 = jax.random.normal(jax.random.key(0), (3, 2, 4))
    noise = jax.random.normal(jax.random.key(1), (3, 2, 4))
    t = jnp.array([0.1, 0.5, 0.9])
    out = D.add_noise(sched, x0, noise, t)
    for i in range(3):
        expected = sched.alpha(t[i]) * x0[i] + sched.sigma(t[i]) * noise[i]
        np.testing.assert_allclose(out[i], expected, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(
        D.add_noise(sched, x0, noise, 0.5), sched.alpha(0.5) * x0 + sched.sigma(0.5) * noise
    )


def test_add_noise_dtype_grad_jit_and_errors():
    sched = D.VPDiscrete.ddpm_linear()
    x0 = jnp.ones((2, 3), jnp.float32)
    out = D.add_noise(sched, x0, jnp.zeros((2, 3), jnp.float32), jnp.array([0.2, 1.0]))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out[1], sched.alpha(1.0), rtol=1e-6)
    # d x_t / d t = alpha'(t) x0 + sigma'(t) noise
    grad = jax.grad(lambda t: D.add_noise(D.VPLinear(), 2.0, 3.0, t))(0.3)
    _, _, da, ds = D.VPLinear().alpha_sigma_derivatives(0.3)
    assert float(grad) == pytest.approx(float(2.0 * da + 3.0 * ds), rel=1e-12)
    jitted = jax.jit(D.add_noise)(sched, x0, x0, jnp.array([0.2, 0.4]))
    assert jitted.shape == (2, 3)
    with pytest.raises(ValueError, match="noise"):
        D.add_noise(sched, x0, jnp.ones(3), 0.5)
    with pytest.raises(ValueError, match="batch"):
        D.add_noise(sched, x0, x0, jnp.ones(3))
    with pytest.raises(TypeError, match="schedule"):
        D.add_noise("vp", x0, x0, 0.5)
