import jax
import pytest

from jaxsolve.experiments._diffusion_nfe import diffusion_error_vs_nfe, sampler_registry
from jaxsolve.experiments._registry import ConfigError, RunContext


def test_registry_lists_every_deterministic_sampler():
    names = sampler_registry()
    assert {"DDIM", "DPMSolver++(2M)", "UniPC-2(bh2)", "DEIS-3", "PNDM(prk)"} <= set(names)
    assert all(not s.is_stochastic() for s in names.values())


def test_error_vs_nfe_runs_and_errors_fall(tmp_path):
    jax.config.update("jax_enable_x64", True)
    out = diffusion_error_vs_nfe(
        RunContext(tmp_path, progress=False),
        nfes=[5, 20],
        num_samples=16,
        samplers=["DPMSolver++(2M)", "DPMSolver-3"],
    )
    rows = {(r["sampler"], r["nfe_budget"]): r for r in out.table}
    assert rows[("DPMSolver-3", 5)]["steps"] == 1 and rows[("DPMSolver-3", 20)]["nfe"] == 18
    for name in ("DPMSolver++(2M)", "DPMSolver-3"):
        assert rows[(name, 20)]["rmse"] < 0.5 * rows[(name, 5)]["rmse"]
    assert (tmp_path / "diffusion_error_vs_nfe.png").exists()
    with pytest.raises(ConfigError, match="unknown sampler"):
        diffusion_error_vs_nfe(RunContext(tmp_path, progress=False), samplers=["Nope"])
