"""Sample-level DP-SGD for the GRU detector: per-sample gradients, clipping, noise, training, accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant

from fedids.data.windows import compute_window_indices
from fedids.model.gru import GRUDetector
from fedids.model.train import TrainConfig, predict_proba
from fedids.privacy import dpsgd, per_sample
from fedids.privacy.dpsgd import _per_sample_loss, fit_dpsgd, private_grad_sum
from fedids.privacy.secure_random import SecureGaussian

N_FEATURES, WINDOW, HIDDEN = 4, 3, 8
N_ROWS, BATCH = 240, 40


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two classes separated by a shift of every feature; two hosts interleaved."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    scaled = (rng.normal(size=(n, N_FEATURES)) + 2.0 * y[:, None] - 1.0).astype(np.float32)
    windows = compute_window_indices(np.arange(n) % 2, WINDOW)
    return scaled, windows, y


def _model(seed: int = 0) -> GRUDetector:
    torch.manual_seed(seed)
    return GRUDetector(N_FEATURES + 1, 2, HIDDEN)


def _config(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=BATCH, lr=0.02, loss="weighted_ce", seed=3)


def _fit(epochs: int, noise: float):
    scaled, windows, y = _task(N_ROWS, seed=1)
    model = _model()
    out = fit_dpsgd(
        model,
        scaled,
        windows,
        y,
        _config(epochs),
        noise_multiplier=noise,
        max_grad_norm=1.0,
        class_weights=np.ones(2, dtype=np.float32),
    )
    return model, out, (scaled, windows, y)


def _batch(n: int, seed: int, n_classes: int = 3) -> tuple[GRUDetector, torch.Tensor, torch.Tensor]:
    """A detector and a batch of windows ``(n, WINDOW, N_FEATURES + 1)`` with padded (zero, absent) steps,
    large enough inputs that some rows' gradients exceed a clip norm of 1 and some do not."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = GRUDetector(N_FEATURES + 1, n_classes, HIDDEN)
    x = rng.normal(scale=rng.uniform(0.1, 3.0, size=(n, 1, 1)), size=(n, WINDOW, N_FEATURES + 1))
    x[:, :, -1] = 1.0
    x[: n // 3, 0, :] = 0.0  # rows with one step of missing history, as gather_windows pads
    y = rng.integers(0, n_classes, n)
    return model, torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def _loss_fn(loss: str, n_classes: int = 3):
    """fit_dpsgd's per-sample loss with non-trivial class weights and a scaled (absent) logit."""
    cfg = TrainConfig(loss=loss, absent_logit_scale=0.5)
    weight = torch.linspace(0.5, 2.0, n_classes)
    scale = torch.ones(n_classes)
    scale[-1] = cfg.absent_logit_scale

    def fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _per_sample_loss(logits * scale, y, weight, cfg)

    return fn


def _loop_grads(model: GRUDetector, x: torch.Tensor, y: torch.Tensor, fn) -> list[dict[str, torch.Tensor]]:
    """Reference: every row's gradient by autograd through the real nn.GRU, one row at a time."""
    out = []
    for b in range(len(x)):
        model.zero_grad()
        fn(model(x[b : b + 1]), y[b : b + 1]).sum().backward()
        out.append({k: p.grad.detach().clone() for k, p in model.named_parameters()})
    return out


def _norm(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.ravel() for g in grads.values()]).double().norm()


@pytest.mark.parametrize("loss", ["weighted_ce", "focal"])
def test_per_sample_gradients_match_a_per_example_autograd_loop_on_nn_gru(loss: str) -> None:
    model, x, y = _batch(24, seed=4)
    fn = _loss_fn(loss)
    reference = _loop_grads(model, x, y, fn)
    trace = per_sample.trace_gru(model, x, lambda logits: fn(logits, y))
    with torch.no_grad():
        torch.testing.assert_close(trace.losses, fn(model(x), y), atol=1e-6, rtol=0)  # nn.GRU's equations

    grads = per_sample.per_sample_grads(trace)
    assert tuple(grads) == tuple(name for name, _ in model.named_parameters()) == per_sample.PARAMETER_NAMES
    for name, g in grads.items():
        expected = torch.stack([r[name] for r in reference])
        assert g.shape == expected.shape
        assert (g - expected).abs().max() < 1e-6, name
    # Ghost norms (no materialised gradient) equal the norms of the loop's gradients.
    norms = torch.stack([_norm(r) for r in reference]).float()
    torch.testing.assert_close(per_sample.sample_norms(trace), norms, rtol=1e-5, atol=1e-6)
    # And a weighted sum of the per-sample gradients equals the same sum of the loop's.
    w = torch.rand(len(x))
    for name, g in per_sample.weighted_grad_sum(trace, w).items():
        expected = sum(wb * r[name] for wb, r in zip(w, reference))
        assert (g - expected).abs().max() < 1e-5, name


def test_clipping_bounds_every_row_and_a_noiseless_step_is_the_clipped_sum() -> None:
    model, x, y = _batch(30, seed=6)
    fn = _loss_fn("focal")
    clip = 1.0
    reference = _loop_grads(model, x, y, fn)
    norms = [float(_norm(r)) for r in reference]
    assert min(norms) < clip < max(norms)  # both clipped and unclipped rows

    def step(rows: slice) -> dict[str, torch.Tensor]:
        grads, _ = private_grad_sum(
            model,
            x[rows],
            lambda logits: fn(logits, y[rows]),
            max_grad_norm=clip,
            noise_multiplier=0.0,
            source=None,
        )
        return grads

    for b, (r, norm) in enumerate(zip(reference, norms)):
        alone = step(slice(b, b + 1))  # a one-row batch: that row's clipped gradient
        assert float(_norm(alone)) <= clip * (1 + 1e-5)
        factor = min(1.0, clip / (norm + 1e-6))  # Opacus' clip factor
        for name, g in alone.items():
            assert (g - factor * r[name]).abs().max() < 2e-6, name
    # The whole batch without noise: the sum of the clipped gradients (Adam gets the sum, as Opacus'
    # loss_reduction="sum" did); divided by the batch size, the clipped-mean gradient.
    full = step(slice(None))
    factors = [min(1.0, clip / (n + 1e-6)) for n in norms]
    for name, g in full.items():
        clipped_mean = sum(f * r[name] for f, r in zip(factors, reference)) / len(x)
        assert (g / len(x) - clipped_mean).abs().max() < 1e-6, name


def test_the_step_noise_is_gaussian_with_sigma_times_the_clip_norm_and_never_repeats() -> None:
    torch.manual_seed(0)
    model = GRUDetector(79, 16, 64)  # the default size: 28,880 parameters
    empty = torch.zeros((0, 10, 79))
    kwargs = dict(max_grad_norm=0.7, noise_multiplier=1.5, source=SecureGaussian())
    first, loss = private_grad_sum(model, empty, lambda logits: logits.sum(1), **kwargs)
    second, _ = private_grad_sum(model, empty, lambda logits: logits.sum(1), **kwargs)
    assert loss == 0.0
    a = torch.cat([g.ravel() for g in first.values()])
    b = torch.cat([g.ravel() for g in second.values()])
    assert len(a) == sum(p.numel() for p in model.parameters())
    assert abs(float(a.std()) - 1.05) < 0.02 and abs(float(a.mean())) < 0.02
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="SecureGaussian"):
        private_grad_sum(
            model, empty, lambda logits: logits.sum(1), max_grad_norm=1.0, noise_multiplier=1.0, source=None
        )


def test_refuses_a_gru_it_does_not_trace() -> None:
    model = _model()
    model.gru = torch.nn.GRU(N_FEATURES + 1, HIDDEN, num_layers=2, batch_first=True)
    scaled, windows, y = _task(20, seed=0)
    with pytest.raises(ValueError, match="one-layer"):
        fit_dpsgd(model, scaled, windows, y, _config(1), noise_multiplier=1.0, max_grad_norm=1.0)


def test_training_reduces_loss_and_reports_epsilon() -> None:
    model, out, (scaled, windows, y) = _fit(epochs=6, noise=0.8)
    res = out.result
    assert res.examples == N_ROWS
    assert len(res.losses) == 6
    assert res.losses[-1] < 0.8 * res.losses[0]
    # The trained weights landed in the caller's nn.GRU model.
    accuracy = (predict_proba(model, scaled, windows).argmax(1) == y).mean()
    assert accuracy > 0.9
    assert out.delta == 1e-5
    assert math.isfinite(out.epsilon) and out.epsilon > 0

    # Independent reference: Google's RDP accountant for the same Poisson-subsampled Gaussian steps. The
    # PLD figure is a tighter upper bound: at most RDP's, and not far below it (12.4 -> 11.0 here).
    acc = RdpAccountant()
    acc.compose(dp_event.PoissonSampledDpEvent(BATCH / N_ROWS, dp_event.GaussianDpEvent(0.8)), res.steps)
    reference = acc.get_epsilon(1e-5)
    assert 0.8 * reference < out.epsilon <= reference

    # More epochs spend more; more noise spends less.
    _, fewer, _ = _fit(epochs=2, noise=0.8)
    _, noisier, _ = _fit(epochs=2, noise=1.6)
    assert 0 < fewer.epsilon < out.epsilon
    assert 0 < noisier.epsilon < fewer.epsilon


def test_rows_with_negative_target_are_skipped() -> None:
    scaled, windows, y = _task(N_ROWS, seed=2)
    # Append 60 unlabelled rows whose windows point at extreme flows: if any were used, the weights
    # would differ from training on the labelled rows alone.
    wild = np.full((60, N_FEATURES), 1e3, dtype=np.float32)
    scaled_all = np.concatenate([scaled, wild])
    extra = np.repeat(np.arange(N_ROWS, N_ROWS + 60)[:, None], WINDOW, axis=1)
    windows_all = np.concatenate([windows, extra])
    y_all = np.concatenate([y, np.full(60, -1, dtype=np.int64)])
    # Unlabelled rows spread among the labelled ones.
    interleave = np.argsort(np.r_[np.arange(N_ROWS), np.arange(60) * 4 + 0.5], kind="stable")
    assert (y_all[interleave][1::5][:60] == -1).all()
    kwargs = dict(noise_multiplier=1.0, max_grad_norm=1.0, class_weights=np.ones(2, dtype=np.float32))

    with_unlabelled = _model()
    a = fit_dpsgd(
        with_unlabelled, scaled_all, windows_all[interleave], y_all[interleave], _config(1), **kwargs
    )
    labelled_only = _model()
    b = fit_dpsgd(labelled_only, scaled, windows, y, _config(1), **kwargs)

    assert a.result.examples == b.result.examples == N_ROWS  # the unlabelled rows are not in the dataset
    assert a.result.steps == b.result.steps
    assert a.epsilon == b.epsilon  # the sample rate counts labelled rows only
    # (The weights themselves differ between the two runs: DP noise and sampling come from the OS, not
    # from the seed; test_dp_noise_and_sampling_do_not_come_from_the_run_seed.)
    assert all(torch.isfinite(p).all() for p in with_unlabelled.parameters())


def test_rejects_bad_arguments() -> None:
    scaled, windows, y = _task(20, seed=0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        fit_dpsgd(_model(), scaled, windows, y, _config(1), noise_multiplier=0.0, max_grad_norm=1.0)
    with pytest.raises(ValueError, match="no rows"):
        fit_dpsgd(
            _model(), scaled, windows, np.full(20, -1), _config(1), noise_multiplier=1.0, max_grad_norm=1.0
        )


def test_multi_round_accounting_matches_the_live_accountant_and_calibration_meets_the_budget() -> None:
    """The federated clients' bookkeeping (fedids.privacy.dpsgd.sample_rate, steps_per_epoch,
    epsilon_spent) reproduces what Opacus' own accountant reports for a real fit_dpsgd call, and a
    noise multiplier calibrated for R rounds spends at most the target over R rounds, close to it."""
    _, out, _ = _fit(epochs=2, noise=0.8)
    rate = dpsgd.sample_rate(N_ROWS, BATCH)
    steps = 2 * dpsgd.steps_per_epoch(N_ROWS, BATCH)
    assert out.result.steps == steps
    assert dpsgd.epsilon_spent(0.8, rate, steps, 1e-5) == pytest.approx(out.epsilon, rel=1e-6)

    rounds, target = 10, 8.0
    sigma = dpsgd.calibrate_noise(target, 1e-5, rate, rounds * steps)
    spent = [dpsgd.epsilon_spent(sigma, rate, r * steps, 1e-5) for r in range(1, rounds + 1)]
    assert all(a < b for a, b in zip(spent, spent[1:]))  # every round spends more
    assert target - 0.05 <= spent[-1] <= target  # the budget, used up, never exceeded
    assert dpsgd.calibrate_noise(target / 2, 1e-5, rate, rounds * steps) > sigma
    assert dpsgd.sample_rate(10, 64) == 1.0 and dpsgd.sample_rate(130, 64) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        dpsgd.calibrate_noise(0.0, 1e-5, rate, 10)


def test_dp_noise_and_sampling_do_not_come_from_the_run_seed() -> None:
    """The server knows config.seed (and the run seed is in the model's metadata): with it, two runs on the
    same data must still differ, so a server cannot re-run a client and subtract its noise."""
    first, _, _ = _fit(epochs=1, noise=1.0)
    second, _, _ = _fit(epochs=1, noise=1.0)
    a = torch.cat([p.detach().ravel() for p in first.parameters()])
    b = torch.cat([p.detach().ravel() for p in second.parameters()])
    assert not torch.equal(a, b)
    # Without noise and sampling randomness the same seed would give the same model: the noise is the
    # difference (same data, same initial weights, same config).
    assert (a - b).abs().max() > 1e-4


def test_the_secure_gaussian_is_a_standard_normal_and_never_repeats() -> None:
    from scipy import stats

    from fedids.privacy.secure_random import SecureGaussian

    z = SecureGaussian().normal(100_000)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02
    assert not np.array_equal(SecureGaussian().normal(16), SecureGaussian().normal(16))
    assert "urandom" in repr(SecureGaussian()) and len(repr(SecureGaussian())) < 80  # no key material


def _analytic_gaussian_epsilon(mu: float, delta: float) -> float:
    """The exact epsilon at ``delta`` of a Gaussian mechanism with sensitivity / std ``mu`` (Balle and
    Wang 2018): delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), decreasing in eps."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - np.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return float(brentq(excess, 0.0, 200.0))


def test_epsilon_spent_is_an_upper_bound_close_to_the_exact_one_and_never_above_rdp():
    """Without sampling, T Gaussian steps at noise s and k releases at noise r are one Gaussian mechanism
    of mu = sqrt(T / s^2 + k / r^2), whose epsilon is known exactly: the PLD figure must be at or above it
    (an upper bound) and within 2% of it; with Poisson sampling it must stay at or below Opacus' RDP
    accountant with the same history."""
    from opacus.accountants import RDPAccountant

    for noise, steps, releases in [(2.0, 30, (0.0, 0)), (3.0, 60, (3.0, 2))]:
        mu = np.sqrt(steps / noise**2 + (releases[1] / releases[0] ** 2 if releases[1] else 0.0))
        exact = _analytic_gaussian_epsilon(mu, 1e-5)
        assert exact <= dpsgd.epsilon_spent(noise, 1.0, steps, 1e-5, releases) <= 1.02 * exact
    for noise, rate, steps, releases in [(1.0, 0.01, 500, (0.0, 0)), (0.9, 0.05, 300, (3.0, 2))]:
        reference = RDPAccountant()
        reference.history = [(noise, rate, steps)] + (
            [(releases[0], 1.0, releases[1])] if releases[1] else []
        )
        rdp = reference.get_epsilon(1e-5)
        assert 0.8 * rdp < dpsgd.epsilon_spent(noise, rate, steps, 1e-5, releases) <= rdp
    # below PLD_MIN_NOISE (an epsilon in the hundreds or thousands) RDP answers alone, in bounded time: then
    # the figure is exactly Opacus' RDP accountant with the same history
    for noise, releases in [(0.01, (0.0, 0)), (0.3, (3.0, 2))]:
        reference = RDPAccountant()
        reference.history = [(noise, 0.25, 240)] + ([(releases[0], 1.0, releases[1])] if releases[1] else [])
        assert dpsgd.epsilon_spent(noise, 0.25, 240, 1e-5, releases) == pytest.approx(
            reference.get_epsilon(1e-5), rel=1e-12
        )
    assert dpsgd.epsilon_spent(0.01, 0.25, 240, 1e-5) > 1e3


def test_a_distributed_step_is_the_clipped_sum_of_a_poisson_batch_plus_its_share_of_the_noise():
    """distributed_step's model change times batch / lr is g + z: with no row to sample, z alone, of std
    sigma C / sqrt(shares) and fresh each call; with every row sampled and no noise to speak of, g."""
    import functools

    from fedids.data.windows import gather_windows

    scaled, windows, y = _task(N_ROWS, seed=1)
    cfg = TrainConfig(batch_size=BATCH, lr=0.5, loss="weighted_ce")

    def step(targets: np.ndarray, rate: float, noise: float, shares: int) -> tuple[np.ndarray, int]:
        model = _model()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        result = dpsgd.distributed_step(
            model,
            scaled,
            windows,
            targets,
            cfg,
            rate=rate,
            noise_multiplier=noise,
            shares=shares,
            max_grad_norm=1.0,
            class_weights=np.ones(2, dtype=np.float32),
        )
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return ((before - after) * BATCH / cfg.lr).numpy(), result.examples

    nothing = np.full(N_ROWS, -1)
    (z, examples), (z2, _) = step(nothing, 0.5, 2.0, 4), step(nothing, 0.5, 2.0, 4)
    assert examples == 0 and not np.allclose(z, z2)  # OS randomness, no seed
    # 2 x 378 draws: the sample std is within 12% of sigma C / sqrt(shares) but with probability ~1e-5.
    assert abs(np.concatenate([z, z2]).std() / (2.0 / math.sqrt(4)) - 1) < 0.12

    g, examples = step(y, 1.0, 1e-6, 1)
    model = _model()
    loss = functools.partial(
        dpsgd._scaled_loss, target=torch.from_numpy(y), weight=torch.ones(2), scale=torch.ones(2), cfg=cfg
    )
    x = torch.from_numpy(gather_windows(scaled, windows))
    expected, _ = private_grad_sum(model, x, loss, max_grad_norm=1.0, noise_multiplier=0.0, source=None)
    flat = torch.cat([expected[name].flatten() for name, _ in model.named_parameters()]).numpy()
    assert examples == N_ROWS and np.allclose(g, flat, atol=1e-3)
    with pytest.raises(ValueError, match="shares"):
        step(y, 1.0, 1.0, 0)
