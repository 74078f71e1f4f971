import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from jaxsolve._core import (
    NoProgressMeter,
    TextProgressMeter,
    TqdmProgressMeter,
    make_progress_meter,
)


def _loop(meter, x, num_steps=50):
    state = meter.init()

    def body(carry, i):
        state, x = carry
        state = meter.step(state, (i + 1) / num_steps)
        return (state, x + 1.0), None

    (state, x), _ = jax.lax.scan(body, (state, x), jnp.arange(num_steps))
    meter.close(state)
    return x


def test_text_meter_under_jit_reports_monotone_percentages(capsys):
    meter = TextProgressMeter(label="unit-jit", granularity=10)
    out = jax.jit(lambda x: _loop(meter, x))(jnp.array(0.0))
    jax.effects_barrier()
    assert float(out) == 50.0
    err = capsys.readouterr().err
    shown = [
        int(chunk.split(":")[1].strip().rstrip("%"))
        for chunk in err.strip().split("\r")
        if chunk.strip()
    ]
    assert shown == sorted(shown) and shown[-1] == 100
    assert len(shown) == len(set(shown)) <= 11
    assert err.endswith("\n")


def test_text_meter_under_vmap_prints_each_percentage_once(capsys):
    meter = TextProgressMeter(label="unit-vmap", granularity=25)
    out = jax.jit(jax.vmap(lambda x: _loop(meter, x)))(jnp.arange(4.0))
    jax.effects_barrier()
    assert jnp.array_equal(out, jnp.arange(4.0) + 50.0)
    err = capsys.readouterr().err
    shown = [c.strip() for c in err.split("\r") if c.strip()]
    assert shown == [
        "unit-vmap:   0%",
        "unit-vmap:  25%",
        "unit-vmap:  50%",
        "unit-vmap:  75%",
        "unit-vmap: 100%",
    ]


def test_no_recompile_on_second_call():
    meter = TextProgressMeter(label="unit-retrace", granularity=50)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(x):
        return _loop(meter, x, num_steps=4)

    run(jnp.array(0.0))
    run(jnp.array(3.0))
    jax.effects_barrier()


def test_make_progress_meter():
    assert isinstance(make_progress_meter(False, "x"), NoProgressMeter)
    assert isinstance(make_progress_meter(True, "x"), TextProgressMeter | TqdmProgressMeter)
    meter = TextProgressMeter(label="mine")
    assert make_progress_meter(meter, "x") is meter
    with pytest.raises(TypeError, match="`progress` must be a bool"):
        make_progress_meter("yes", "x")


def test_tqdm_meter_when_installed(capsys):
    pytest.importorskip("tqdm")
    meter = TqdmProgressMeter(label="unit-tqdm", granularity=20)
    jax.jit(lambda x: _loop(meter, x, num_steps=10))(jnp.array(0.0))
    jax.effects_barrier()
    assert "100/100" in capsys.readouterr().err
