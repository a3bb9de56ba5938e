"""Cost of sample-level DP-SGD against plaintext training of the GRU detector, in one run, one thread.

The default detector (78 features + a presence channel, window 10, hidden 64, 16 classes) trains one
epoch on the same rows (synthetic scaled features, 200 hosts) with:

* ``plaintext``: :func:`fedids.model.train.fit` at the DP-SGD batch (256), the same Adam and loss;
* ``plaintext_federation``: ``fit`` as a plaintext federated round's client trains: batch 64, lr 3e-3,
  FedProx mu 0.01 (``FederationConfig``'s defaults);
* ``dpsgd``: :func:`fedids.privacy.dpsgd.fit_dpsgd` (per-sample gradients from one batched backward,
  ghost norms, secure noise), expected Poisson batch 256;
* ``opacus_dpgru``: the DP-SGD this replaced: Opacus 1.6's ``PrivacyEngine`` over a ``DPGRU`` twin
  (its own torch noise, so the old path is, if anything, favoured).

Each repeat runs every method once, in a rotating order (the machine is shared: neighbours' load falls
on all methods alike); the JSON holds every time, the medians and the ratios to ``plaintext`` (and to
``plaintext_federation``). ``per_step_ms`` times (CPU) one forward+backward at batch 256 for each way
of getting per-sample gradients (median of ``--step-repeats``): plaintext ``nn.GRU`` (no per-sample
gradients); ghost norms + clipped sum (what ``fit_dpsgd`` does); materialised per-sample gradients
clipped and summed as Opacus' optimizer does; ``torch.func`` ``vmap(grad)`` over the plain-op GRU
(per-sample gradients only; ``vmap`` over ``nn.GRU`` itself fails in torch 2.13).

Run: ``nice .venv/bin/python benchmarks/bench_dpsgd.py`` (writes ``benchmarks/results/dpsgd.json``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from fedids.data.windows import compute_window_indices, gather_windows  # noqa: E402
from fedids.model.gru import GRUDetector  # noqa: E402
from fedids.model.train import TrainConfig, fit  # noqa: E402
from fedids.privacy import per_sample  # noqa: E402
from fedids.privacy.dpsgd import _per_sample_loss, fit_dpsgd  # noqa: E402

N_FEATURES, WINDOW, HIDDEN, N_CLASSES, HOSTS = 78, 10, 64, 16, 200


def _data(n_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scaled = rng.normal(size=(n_rows, N_FEATURES)).astype(np.float32)
    windows = compute_window_indices(rng.integers(0, HOSTS, n_rows), WINDOW)
    return scaled, windows, rng.integers(0, N_CLASSES, n_rows).astype(np.int64)


def _model() -> GRUDetector:
    torch.manual_seed(0)
    return GRUDetector(N_FEATURES + 1, N_CLASSES, HIDDEN)


def _opacus_dpgru(data, config: TrainConfig, weights: np.ndarray) -> None:
    """One epoch of the replaced path: Opacus' PrivacyEngine on a DPGRU twin (weights copied in)."""
    from opacus import PrivacyEngine
    from opacus.layers import DPGRU
    from torch.utils.data import DataLoader, TensorDataset

    scaled, windows, targets = data
    source = _model()

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = DPGRU(N_FEATURES + 1, HIDDEN, batch_first=True)
            self.head = torch.nn.Linear(HIDDEN, N_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.gru(x)[0][:, -1, :])

    twin = Twin()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            kind, matrix = name.split("_")
            getattr(getattr(twin.gru.l0, matrix), kind).copy_(getattr(source.gru, f"{name}_l0"))
        twin.head.load_state_dict(source.head.state_dict())
    loader = DataLoader(TensorDataset(torch.arange(len(targets))), batch_size=config.batch_size)
    weight = torch.as_tensor(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, dp_loader = engine.make_private(
            module=twin,
            optimizer=torch.optim.Adam(twin.parameters(), lr=config.lr),
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
            loss_reduction="sum",
        )
        for (idx,) in dp_loader:
            batch = idx.numpy()
            optimizer.zero_grad()
            if len(batch):
                x = torch.from_numpy(gather_windows(scaled, windows[batch]))
                y = torch.from_numpy(targets[batch])
                _per_sample_loss(model(x), y, weight, config).sum().backward()
            else:
                for p in model.parameters():
                    p.grad_sample = torch.zeros((0, *p.shape))
            optimizer.step()


def _methods(data, args) -> dict[str, Callable[[], object]]:
    scaled, windows, targets = data
    weights = np.ones(N_CLASSES, dtype=np.float32)
    dp_cfg = TrainConfig(epochs=1, batch_size=args.batch, lr=1e-2, loss="focal")
    fed_cfg = TrainConfig(epochs=1, batch_size=64, lr=3e-3, loss="focal", proximal_mu=0.01)

    def plaintext_federation() -> object:
        model = _model()
        anchors = [p.detach().clone() for p in model.parameters()]
        return fit(model, scaled, windows, targets, fed_cfg, class_weights=weights, global_params=anchors)

    methods: dict[str, Callable[[], object]] = {
        "plaintext": lambda: fit(_model(), scaled, windows, targets, dp_cfg, class_weights=weights),
        "plaintext_federation": plaintext_federation,
        "dpsgd": lambda: fit_dpsgd(
            _model(),
            scaled,
            windows,
            targets,
            dp_cfg,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            class_weights=weights,
        ),
    }
    if not args.skip_opacus:
        methods["opacus_dpgru"] = lambda: _opacus_dpgru(data, dp_cfg, weights)
    return methods


def _per_step(data, batch: int, repeats: int) -> dict[str, float]:
    """CPU milliseconds of one forward+backward at ``batch`` per way of getting (per-sample) gradients,
    clipped and summed where per-sample."""
    from torch.func import grad, vmap

    scaled, windows, targets = data
    x = torch.from_numpy(gather_windows(scaled, windows[:batch]))
    y = torch.from_numpy(targets[:batch])
    model = _model()
    cfg = TrainConfig(loss="focal")
    weight = torch.ones(N_CLASSES)

    def loss_fn(logits: torch.Tensor, target: torch.Tensor = y) -> torch.Tensor:
        return _per_sample_loss(logits, target, weight, cfg)

    def plain() -> None:
        model.zero_grad()
        loss_fn(model(x)).sum().backward()

    def ghost() -> None:
        trace = per_sample.trace_gru(model, x, loss_fn)
        clip = (1.0 / (per_sample.sample_norms(trace) + 1e-6)).clamp(max=1.0)
        per_sample.weighted_grad_sum(trace, clip)

    def materialised() -> None:  # what Opacus' optimizer does with grad_sample: norms, clip, einsum
        grads = list(per_sample.per_sample_grads(per_sample.trace_gru(model, x, loss_fn)).values())
        norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in grads], dim=1).norm(2, dim=1)
        clip = (1.0 / (norms + 1e-6)).clamp(max=1.0)
        [torch.einsum("i,i...", clip, g) for g in grads]

    params = {k: p.detach() for k, p in model.named_parameters()}

    def one_row(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        h = xi.new_zeros(HIDDEN)
        gi = F.linear(xi, p["gru.weight_ih_l0"], p["gru.bias_ih_l0"])
        for t in range(WINDOW):
            i_r, i_z, i_n = gi[t].chunk(3)
            h_r, h_z, h_n = F.linear(h, p["gru.weight_hh_l0"], p["gru.bias_hh_l0"]).chunk(3)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = n + z * (h - n)
        return loss_fn(F.linear(h, p["head.weight"], p["head.bias"])[None], yi[None]).sum()

    vmapped = vmap(grad(one_row), in_dims=(None, 0, 0))
    out = {}
    for name, fn in [
        ("plaintext_nn_gru", plain),
        ("ghost_clipped_sum", ghost),
        ("materialised_clipped_sum", materialised),
        ("vmap", lambda: vmapped(params, x, y)),
    ]:
        fn()
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        out[name] = round(1e3 * statistics.median(times), 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12_800, help="training rows (one epoch per method)")
    parser.add_argument("--batch", type=int, default=256, help="DP-SGD expected batch (plaintext: the same)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step-repeats", type=int, default=15)
    parser.add_argument("--skip-opacus", action="store_true", help="leave out the replaced Opacus path")
    parser.add_argument("--name", default="dpsgd", help="results/NAME.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread per client, as in the federation
    data = _data(args.rows)
    methods = _methods(data, args)
    for fn in methods.values():  # warm-up: first-call costs (allocator, lazy imports) are not a round's
        fn()
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            methods[name]()
            wall[name].append(round(time.perf_counter() - start, 3))
            cpu[name].append(round(time.process_time() - start_cpu, 3))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in wall.items()))
    median = {name: statistics.median(v) for name, v in wall.items()}
    median_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    payload = {
        "command": "nice .venv/bin/python benchmarks/bench_dpsgd.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "setup": {
            "rows": args.rows,
            "batch": args.batch,
            "epochs": 1,
            "features": N_FEATURES,
            "window": WINDOW,
            "hidden": HIDDEN,
            "classes": N_CLASSES,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "repeats": args.repeats,
            "load_average_1min": os.getloadavg()[0],
        },
        # Wall seconds of one epoch (the whole call: setup, training, fit_dpsgd's epsilon), median over
        # repeats; CPU seconds of this process for the same calls (less sensitive to neighbours' load).
        "seconds_median": median,
        "cpu_seconds_median": median_cpu,
        "seconds_all": wall,
        "cpu_seconds_all": cpu,
        "ratio_to_plaintext": {k: round(v / median["plaintext"], 2) for k, v in median.items()},
        "cpu_ratio_to_plaintext": {k: round(v / median_cpu["plaintext"], 2) for k, v in median_cpu.items()},
        "ratio_to_plaintext_federation": {
            k: round(v / median["plaintext_federation"], 2) for k, v in median.items()
        },
        "per_step_ms": _per_step(data, args.batch, args.step_repeats),
    }
    print(
        {
            k: payload[k]
            for k in ("seconds_median", "ratio_to_plaintext", "ratio_to_plaintext_federation", "per_step_ms")
        }
    )
    write_result(args.name, payload)
    return payload


if __name__ == "__main__":
    main()
