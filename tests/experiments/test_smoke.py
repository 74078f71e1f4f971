"""Every registered experiment runs end to end (tiny parameters) and writes its table and plots.

The full-size runs are `jaxsolve run <config>`; these only guard the plumbing.
"""

import tomllib
from pathlib import Path

import jax
import pytest

from jaxsolve.cli import main
from jaxsolve.experiments import RunContext, available, get

TINY = {
    "deq_train": dict(width=8, num_train=60, num_test=60, steps=5),
    "diffusion_learned_steps": dict(
        samplers=["ddim"], nfes=[5], num_train=16, num_test=64, num_iterations=5, reference_steps=50
    ),
    "diffusion_train_2d": dict(num_train_steps=20, batch_size=64, width=16, num_samples=64),
    "diffusion_digits": dict(
        channels=8,
        num_train_steps=10,
        batch_size=16,
        samplers=["ddim"],
        nfes=[3],
        reference_steps=3,
        num_samples=16,
    ),
    "hyperparam_implicit": dict(
        num_features=10,
        num_train=40,
        num_val=40,
        inner_steps=[10, 30],
        outer_steps=3,
        optimisation_inner_steps=20,
    ),
    "optimizers_digits": dict(
        models=["mlp", "cnn"],
        optimizers=["adam", "polyak_momentum", "schedule_free"],
        num_steps=5,
        width=16,
        target_loss=2.0,
    ),
    "learning_to_relax": dict(grid=4, num_systems=20, num_omegas=4, num_seeds=2, max_steps=100),
    "sde_cir_adaptive": dict(
        num_paths=4,
        steps=[8, 16],
        ctols=[0.5, 0.25],
        reference_ctol=0.0625,
        tree_tol=2.0**-10,
        dtmin=2.0**-9,
    ),
    "sde_order_table": dict(num_paths=8, steps=[4, 8]),
    "cbo_rastrigin": dict(dims=[2], particles=[10, 20], num_seeds=4, num_steps=50),
    "node_regularised": dict(
        regularisers=["none", "error_local"], width=4, num_train=4, num_test=4, num_iterations=2
    ),
    "zo_finetune": dict(
        hidden=[8],
        pretrain_steps=5,
        evaluation_budget=200,
        num_records=2,
        num_directions=2,
        cge_density=0.1,
        methods=["backprop", "zo_two_point"],
    ),
    "langevin_vs_nuts": dict(
        num_chains=4,
        horizon=1.0,
        num_points=2,
        nuts_warmup=5,
        nuts_samples=5,
        reference_chains=4,  # the sizes of the compared NUTS run: one compilation
        reference_warmup=5,
        reference_samples=5,
    ),
}
CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


def test_every_experiment_has_a_config_and_every_config_is_valid():
    named = {tomllib.loads(p.read_text())["experiment"] for p in CONFIGS}
    assert set(available()) <= named
    for path in CONFIGS:
        config = tomllib.loads(path.read_text())
        get(config["experiment"]).resolve_params(config.get("params", {}))


def test_every_experiment_is_smoke_tested():
    assert set(available()) - {"quickstart", "diffusion_error_vs_nfe"} <= set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_runs_with_tiny_parameters(name, tmp_path):
    if name == "langevin_vs_nuts":
        pytest.importorskip("blackjax")
    experiment = get(name)
    # as under `jaxsolve run`: experiment scripts (and optax/blackjax inside them) use JAX's
    # standard promotion; the library itself is tested under strict promotion elsewhere
    with jax.numpy_dtype_promotion("standard"):
        ctx = RunContext(out_dir=tmp_path, progress=False)
        output = experiment.fn(ctx, **experiment.resolve_params(TINY[name]))
    assert output.table and all(isinstance(row, dict) for row in output.table)
    assert output.plots
    for plot in output.plots:
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_runs_a_named_config_with_out(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(
        'experiment = "hyperparam_implicit"\nname = "tiny"\n[params]\nnum_features = 5\n'
        "num_train = 20\nnum_val = 20\ninner_steps = [5, 10]\nouter_steps = 2\n"
        "optimisation_inner_steps = 5\n"
    )
    with jax.numpy_dtype_promotion("standard"):  # as under `jaxsolve run`, see above
        assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "results.json").exists()
    assert "implicit" in capsys.readouterr().out
