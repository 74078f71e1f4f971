"""A real image model: a small U-Net denoiser trained on scikit-learn's 8x8 digits, sampled with
the main samplers at several NFE; quality by a Fréchet distance between classifier features."""

import math
import time
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
from matplotlib.figure import Figure

from .. import diffusion
from ._data import digits
from ._diffusion_train import train_denoiser
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, register
from ._schema import MinLength, OpenUnitInterval, PositiveFloat, PositiveInt, Range, Seed

# name -> (sampler factory, timestep spacing): the EDM samplers on EDM's (Karras) grid, the
# others on the log-SNR grid, as in `diffusion_train_2d`.
_SAMPLERS = {
    "ddim": (lambda: diffusion.DDIM(), "logsnr"),
    "dpmpp2m": (lambda: diffusion.DPMSolverPP(order=2), "logsnr"),
    "unipc2": (lambda: diffusion.UniPC(order=2), "logsnr"),
    "euler_edm": (lambda: diffusion.EulerEDM(), "karras"),
    "heun_edm": (lambda: diffusion.HeunEDM(), "karras"),
}
SamplerName = Literal[tuple(_SAMPLERS)]
_LABELS = {
    "ddim": "DDIM",
    "dpmpp2m": "DPM-Solver++(2M)",
    "unipc2": "UniPC(2)",
    "euler_edm": "Euler (EDM)",
    "heun_edm": "Heun (EDM)",
}


# ---------------------------------------------------------------------------------------------
# The U-Net
# ---------------------------------------------------------------------------------------------


class _Conv(eqx.Module):
    """A k x k convolution ("same" padding, optional stride 2) of an (H, W, C) image written as
    one matrix product on the k*k shifted copies (im2col): on a CPU, XLA's convolutions on
    8x8 images with few channels are many times slower than this GEMM."""

    weight: jax.Array
    bias: jax.Array
    size: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)

    def __init__(self, c_in, c_out, key, size=3, stride=1):
        fan_in = size * size * c_in
        self.weight = jax.random.normal(key, (fan_in, c_out)) / math.sqrt(fan_in)
        self.bias = jnp.zeros(c_out)
        self.size, self.stride = size, stride

    def __call__(self, h):
        height, width, _ = h.shape
        pad = self.size // 2
        padded = jnp.pad(h, ((pad, pad), (pad, pad), (0, 0)))
        patches = jnp.concatenate(
            [
                padded[i : i + height : self.stride, j : j + width : self.stride]
                for i in range(self.size)
                for j in range(self.size)
            ],
            axis=-1,
        )
        return patches @ self.weight + self.bias


class _GroupNorm(eqx.Module):
    """Group normalisation of an (H, W, C) image with a per-channel scale and shift."""

    scale: jax.Array
    shift: jax.Array
    groups: int = eqx.field(static=True)

    def __init__(self, channels, groups=8):
        self.scale, self.shift = jnp.ones(channels), jnp.zeros(channels)
        self.groups = math.gcd(groups, channels)

    def __call__(self, h):
        height, width, channels = h.shape
        g = h.reshape(height, width, self.groups, channels // self.groups)
        mean = jnp.mean(g, axis=(0, 1, 3), keepdims=True)
        var = jnp.var(g, axis=(0, 1, 3), keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + 1e-5)
        return g.reshape(h.shape) * self.scale + self.shift


class _ResBlock(eqx.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between, a residual connection."""

    norm1: _GroupNorm
    conv1: _Conv
    time: eqx.nn.Linear
    norm2: _GroupNorm
    conv2: _Conv
    skip: _Conv | None

    def __init__(self, c_in, c_out, emb, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.norm1 = _GroupNorm(c_in)
        self.conv1 = _Conv(c_in, c_out, k1)
        self.time = eqx.nn.Linear(emb, c_out, key=k2)
        self.norm2 = _GroupNorm(c_out)
        self.conv2 = _Conv(c_out, c_out, k3)
        self.skip = None if c_in == c_out else _Conv(c_in, c_out, k4, size=1)

    def __call__(self, h, e):
        y = self.conv1(jax.nn.silu(self.norm1(h)))
        y = y + self.time(e)
        y = self.conv2(jax.nn.silu(self.norm2(y)))
        return y + (h if self.skip is None else self.skip(h))


def _upsample(h):
    """Nearest-neighbour 2x upsampling of (H, W, C) (by repeat: cheap to differentiate)."""
    return jnp.repeat(jnp.repeat(h, 2, axis=0), 2, axis=1)


class UNet(eqx.Module):
    """A two-level U-Net noise predictor `eps(x, t)` for a batch `x` of (H, W) images (H, W
    divisible by 4): stem conv, a residual block and a strided-conv downsampling per level, a
    middle block, then nearest upsampling + conv and a residual block on the concatenated skip
    per level; every block gets an embedding of the log-SNR (Fourier features through an MLP)."""

    embed: eqx.nn.MLP
    stem: _Conv
    down1: _ResBlock
    pool1: _Conv
    down2: _ResBlock
    pool2: _Conv
    middle: _ResBlock
    up2_conv: _Conv
    up2: _ResBlock
    up1_conv: _Conv
    up1: _ResBlock
    out_norm: _GroupNorm
    out: _Conv
    frequencies: jax.Array
    schedule: diffusion.AbstractSchedule

    def __init__(self, key, schedule, channels: int = 16, num_frequencies: int = 8):
        c, emb = channels, 4 * channels
        keys = iter(jax.random.split(key, 12))
        self.frequencies = jnp.arange(1, num_frequencies + 1, dtype=jnp.float32) / 4.0
        self.embed = eqx.nn.MLP(1 + 2 * num_frequencies, emb, emb, 1, jax.nn.silu, key=next(keys))
        self.stem = _Conv(1, c, next(keys))
        self.down1 = _ResBlock(c, c, emb, next(keys))
        self.pool1 = _Conv(c, 2 * c, next(keys), stride=2)
        self.down2 = _ResBlock(2 * c, 2 * c, emb, next(keys))
        self.pool2 = _Conv(2 * c, 2 * c, next(keys), stride=2)
        self.middle = _ResBlock(2 * c, 2 * c, emb, next(keys))
        self.up2_conv = _Conv(2 * c, 2 * c, next(keys))
        self.up2 = _ResBlock(4 * c, 2 * c, emb, next(keys))
        self.up1_conv = _Conv(2 * c, c, next(keys))
        self.up1 = _ResBlock(2 * c, c, emb, next(keys))
        self.out_norm = _GroupNorm(c)
        self.out = _Conv(c, 1, next(keys))
        self.schedule = schedule

    def _one(self, x, e):
        h0 = self.stem(x[..., None])
        s1 = self.down1(h0, e)
        s2 = self.down2(self.pool1(s1), e)
        h = self.middle(self.pool2(s2), e)
        h = self.up2(jnp.concatenate([self.up2_conv(_upsample(h)), s2], -1), e)
        h = self.up1(jnp.concatenate([self.up1_conv(_upsample(h)), s1], -1), e)
        return self.out(jax.nn.silu(self.out_norm(h)))[..., 0]

    def __call__(self, x, t):
        # The log-SNR (not t) as the noise level, as in `diffusion_train_2d`.
        lam = self.schedule.logsnr(jnp.asarray(t, x.dtype))
        angles = lam * self.frequencies.astype(x.dtype)
        features = jnp.concatenate([lam[None] / 8, jnp.sin(angles), jnp.cos(angles)])
        e = self.embed(features)
        if x.ndim == 2:
            return self._one(x, e)
        return jax.vmap(self._one, in_axes=(0, None))(x, e)


# ---------------------------------------------------------------------------------------------
# The feature distance
# ---------------------------------------------------------------------------------------------


class _Classifier(eqx.Module):
    """An MLP digit classifier; its penultimate activations are the features of the distance."""

    body: eqx.nn.MLP
    head: eqx.nn.Linear

    def __init__(self, num_pixels, width, key):
        k1, k2 = jax.random.split(key)
        self.body = eqx.nn.MLP(
            num_pixels, width, width, 1, jax.nn.relu, final_activation=jax.nn.relu, key=k1
        )
        self.head = eqx.nn.Linear(width, 10, key=k2)

    def features(self, x):
        return self.body(x.reshape(-1))

    def __call__(self, x):
        return self.head(self.features(x))


def _train_classifier(images, labels, key, steps=400, width=64, learning_rate=3e-3):
    model = _Classifier(images[0].size, width, key)
    optimiser = optax.adamw(learning_rate, weight_decay=1e-3)

    def loss_fn(model):
        logits = jax.vmap(model)(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @eqx.filter_jit
    def fit(model):
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def body(carry, _):
            params, state = carry
            grads = jax.grad(lambda p: loss_fn(eqx.combine(p, static)))(params)
            updates, state = optimiser.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(body, (params, optimiser.init(params)), None, length=steps)
        return eqx.combine(params, static)

    return fit(model)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between the Gaussians fitted to the
    rows of `a` and `b` (FID's formula, on our own classifier's features), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    # a tiny ridge: dead ReLU units give exactly singular covariances
    ridge = 1e-6 * np.eye(a.shape[1])
    cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def _grid_plot(path, rows: dict, title: str) -> str:
    """One row of images per entry of `rows` (name -> (n, H, W) array in [0, 1])."""
    names = list(rows)
    num = max(len(v) for v in rows.values())
    fig = Figure(figsize=(0.55 * num + 1.8, 0.6 * len(names) + 0.6))
    axes = fig.subplots(len(names), num, squeeze=False)
    for i, name in enumerate(names):
        for j in range(num):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(rows[name]):
                ax.imshow(np.clip(rows[name][j], 0.0, 1.0), cmap="gray_r", vmin=0.0, vmax=1.0)
        axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=1.6 / fig.get_figwidth(), wspace=0.05, hspace=0.05)
    fig.savefig(path, dpi=110)
    return str(path.name)


def _num_steps_for(sampler, nfe: int) -> int:
    """The most steps whose declared number of model evaluations is at most `nfe` (>= 1)."""
    steps = 1
    while sampler.num_evaluations(steps + 1) <= nfe:
        steps += 1
    return steps


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------


@register(
    "diffusion_digits",
    "train a small U-Net diffusion model on scikit-learn's digits; sample quality vs NFE "
    "(Fréchet distance of classifier features) for the main samplers",
)
def diffusion_digits(
    ctx: RunContext,
    image_size: Literal[8, 16] = 8,
    channels: PositiveInt = 16,
    num_train_steps: PositiveInt = 1500,
    batch_size: PositiveInt = 128,
    learning_rate: PositiveFloat = 2e-3,
    samplers: Annotated[list[SamplerName], MinLength(1)] = list(_SAMPLERS),  # noqa: B006
    nfes: Annotated[list[Annotated[int, Range(2)]], MinLength(1)] = [5, 10, 20],  # noqa: B006
    reference_steps: PositiveInt = 50,
    num_samples: PositiveInt = 360,
    t_end: OpenUnitInterval = 1e-3,
    seed: Seed = 0,
) -> ExperimentOutput:
    """Train an eps-prediction U-Net (VPLinear schedule, Adam with cosine decay, jitted
    `lax.scan` chunks) on the digits' training split (pixels in [-1, 1]; `image_size=16`
    upsamples bilinearly), train an MLP classifier on the same split, then sample
    `num_samples` images from one shared noise with each sampler at each NFE (the most steps
    whose declared NFE fits; `reference_steps` of DPM-Solver++(3M) as a high-NFE reference).

    Quality is the Fréchet distance between the classifier's penultimate features of the
    samples and of the training images (FID's formula on our own features); its noise floor is
    the distance of as many held-out real test images. Also reported: the fraction of samples
    the classifier labels with confidence > 0.9, and the class histogram's largest share.
    """
    (x_train, y_train), (x_test, y_test) = digits("diffusion_digits", seed, 0.8)
    shape = (image_size, image_size)

    def to_images(flat):
        images = flat.reshape(-1, 8, 8)
        if image_size != 8:
            images = jax.image.resize(images, (images.shape[0], *shape), "linear")
        return 2.0 * images - 1.0  # [0, 1] -> [-1, 1]

    train_images, test_images = to_images(x_train), to_images(x_test)
    schedule = diffusion.VPLinear()
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    k_model, k_train, k_noise, k_classifier, k_ref = keys

    # --- the classifier behind the feature distance
    start = time.perf_counter()
    classifier = _train_classifier(train_images, y_train, k_classifier)
    test_logits = jax.vmap(classifier)(test_images)
    classifier_accuracy = float(jnp.mean(jnp.argmax(test_logits, -1) == y_test))
    features = eqx.filter_jit(lambda c, x: jax.vmap(c.features)(x))
    real_features = np.asarray(features(classifier, train_images))
    n_floor = min(num_samples, test_images.shape[0])
    floor = frechet_distance(np.asarray(features(classifier, test_images[:n_floor])), real_features)
    classifier_seconds = time.perf_counter() - start
    ctx.status(f"classifier test accuracy {classifier_accuracy:.3f}, FD floor {floor:.3f}")

    # --- the denoiser
    net = UNet(k_model, schedule, channels=channels)
    net, losses, train_seconds = train_denoiser(
        ctx, net, schedule, train_images, learning_rate, num_train_steps, batch_size, t_end, k_train
    )

    # --- sampling and quality
    model = diffusion.Model(net, schedule, prediction="eps")
    x_T = jax.random.normal(k_noise, (num_samples, *shape))
    run = eqx.filter_jit(lambda s, m, x, ts: diffusion.sample(s, m, x, ts))

    def evaluate(name, label, sampler, num_steps, spacing):
        ts = diffusion.timesteps(schedule, num_steps, spacing, t_end=t_end)
        start = time.perf_counter()
        x = run(sampler, model, x_T, ts).block_until_ready()
        seconds = time.perf_counter() - start
        logits = jax.vmap(classifier)(x)
        confidence = jnp.max(jax.nn.softmax(logits, -1), -1)
        counts = np.bincount(np.asarray(jnp.argmax(logits, -1)), minlength=10)
        row = {
            "sampler": label,
            "nfe": sampler.num_evaluations(num_steps),
            "num_steps": num_steps,
            "frechet_distance": frechet_distance(
                np.asarray(features(classifier, x)), real_features
            ),
            "confident_fraction": float(jnp.mean(confidence > 0.9)),
            "largest_class_share": float(counts.max() / counts.sum()),
            "seconds_incl_compile": seconds,
        }
        ctx.status(f"{label}, {num_steps} steps: FD {row['frechet_distance']:.3f}")
        return row, x

    rows, images, curves = [], {}, {}
    for name in samplers:
        make, spacing = _SAMPLERS[name]
        sampler = make()
        points = []
        for nfe in nfes:
            row, x = evaluate(name, _LABELS[name], sampler, _num_steps_for(sampler, nfe), spacing)
            rows.append(row)
            points.append((row["nfe"], row["frechet_distance"]))
            images[(name, nfe)] = x
        curves[_LABELS[name]] = tuple(map(np.asarray, zip(*sorted(set(points)), strict=True)))
    ref_row, ref_x = evaluate(
        "reference",
        f"DPM-Solver++(3M), {reference_steps} steps (reference)",
        diffusion.DPMSolverPP(order=3),
        reference_steps,
        "logsnr",
    )
    rows.append(ref_row)
    rows.append(
        {
            "sampler": "held-out real images (noise floor)",
            "nfe": 0,
            "num_steps": 0,
            "frechet_distance": floor,
            "confident_fraction": float(
                jnp.mean(jnp.max(jax.nn.softmax(test_logits[:n_floor], -1), -1) > 0.9)
            ),
            "largest_class_share": float(
                np.bincount(np.asarray(y_test[:n_floor]), minlength=10).max() / n_floor
            ),
            "seconds_incl_compile": 0.0,
        }
    )

    # --- plots
    to_unit = lambda x: np.asarray((x[:12] + 1.0) / 2.0)
    shown_nfe = sorted(nfes, key=lambda n: abs(n - 10))[0]
    grid = {"real (test)": to_unit(test_images)}
    grid[f"reference ({ref_row['nfe']} NFE)"] = to_unit(ref_x)
    for name in samplers:
        grid[f"{_LABELS[name]}, {shown_nfe} NFE"] = to_unit(images[(name, shown_nfe)])
    plots = [
        _grid_plot(
            ctx.path("digits_samples.png"),
            grid,
            f"U-Net diffusion on {image_size}x{image_size} digits: samples (same noise per column)",
        ),
        line_plot(
            ctx.path("digits_quality_vs_nfe.png"),
            {
                **curves,
                "reference": (
                    np.array([min(nfes), max(nfes)]),
                    np.full(2, ref_row["frechet_distance"]),
                ),
                "real-data floor": (np.array([min(nfes), max(nfes)]), np.full(2, floor)),
            },
            title="Fréchet distance of classifier features vs NFE",
            xlabel="model evaluations (NFE)",
            ylabel="Fréchet distance (lower is better)",
            logx=True,
            logy=True,
        ),
    ]

    sampler_rows = [r for r in rows if r["sampler"] in set(_LABELS[n] for n in samplers)]
    best = {}
    for nfe in nfes:
        at = [r for r in sampler_rows if r["nfe"] <= nfe]
        if at:
            top = min(at, key=lambda r: r["frechet_distance"])
            best[f"best_fd_at_nfe_{nfe}"] = top["frechet_distance"]
            best[f"best_sampler_at_nfe_{nfe}"] = top["sampler"]
    headline = {
        **best,
        "reference_fd": ref_row["frechet_distance"],
        "real_data_fd_floor": floor,
        "classifier_test_accuracy": classifier_accuracy,
    }
    summary = {
        "headline": headline,
        "final_train_loss": float(losses[-min(200, len(losses)) :].mean()),
        "train_seconds_incl_compile": train_seconds,
        "classifier_seconds": classifier_seconds,
        "num_parameters": int(
            sum(x.size for x in jax.tree.leaves(eqx.filter(net, eqx.is_inexact_array)))
        ),
    }
    return ExperimentOutput(table=rows, summary=summary, plots=plots)
