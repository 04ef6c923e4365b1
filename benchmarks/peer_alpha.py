r"""Side-by-side power-law fits: WeightWatcher's ``analyze()`` and :func:`rmt_callbacks.fits.fit_power_law` (issue 15).

The model: an MLP ``64 → 512 → 512 → 512 → 10`` trained on scikit-learn's ``load_digits`` (1 797 8 × 8 images,
no download) with Adam for ``--steps`` steps (default 600, batch 128, fixed seeds): trained weights, no internet.
Per layer, printed as a Markdown table:

* WeightWatcher 0.7.7 (``analyze()`` at its defaults): ``alpha``, ``xmin``, ``D`` and ``num_pl_spikes``;
* ours: :func:`~rmt_callbacks.fits.fit_power_law` on the layer's Gram levels from :func:`rmt_callbacks.analyze`,
  with the default ``min_tail = 10`` and with ``min_tail = 2`` (WeightWatcher's candidate rule: every
  eigenvalue but the largest may be :math:`x_{\min}`), and our :math:`x_{\min}` times :math:`M` (WeightWatcher's
  eigenvalues are :math:`s^2`, ours :math:`s^2/M`, :math:`M` the number of rows of the ``(out, in)`` weight).

WeightWatcher is not a dependency: ``pip install --no-deps --target .ww weightwatcher==0.7.7 powerlaw safetensors
matplotlib-inline traitlets`` and run with ``PYTHONPATH=.ww .venv/bin/python benchmarks/peer_alpha.py``.
"""

from __future__ import annotations

import argparse
import logging

import torch
from sklearn.datasets import load_digits
from torch import nn

from rmt_callbacks.analysis import analyze
from rmt_callbacks.fits import fit_power_law
from rmt_callbacks.spectral import nonstructural_levels


def trained_mlp(steps: int) -> tuple[nn.Module, float]:
    """The MLP after ``steps`` Adam steps on ``load_digits``, and its training accuracy."""
    torch.manual_seed(0)  # script, not library code: a fixed run
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    model = nn.Sequential(
        nn.Linear(64, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    return model, accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=600)
    args = p.parse_args()
    import weightwatcher  # optional, not a dependency: PYTHONPATH=.ww

    logging.getLogger("weightwatcher").setLevel(logging.WARNING)
    model, accuracy = trained_mlp(args.steps)
    print(f"# MLP 64-512-512-512-10, {args.steps} Adam steps on load_digits, training accuracy {accuracy:.3f}")
    ww = weightwatcher.WeightWatcher(model=model).analyze()
    ours = [r for r in analyze(model) if r.skipped is None]
    print(
        "| layer | W (M × N) | α WW | α ours | α ours, min_tail 2 | x_min WW | x_min ours × M | D WW | D ours ", end=""
    )
    print("| D ours, min_tail 2 | spikes WW | n_tail ours | n_tail ours, min_tail 2 |")
    print("|---|---|" + "---:|" * 11)
    gaps: list[tuple[float, float]] = []
    for (_, row), r in zip(ww.iterrows(), ours, strict=True):
        m = r.shape[-2]
        bulk = nonstructural_levels(r.spectra["gram"], m)  # what the "power_law" analysis fits
        fit, fit2 = fit_power_law(bulk), fit_power_law(bulk, min_tail=2)
        print(
            f"| {r.name} | {m} × {r.shape[-1]} | {row['alpha']:.4f} | {fit.alpha:.4f} | {fit2.alpha:.4f} "
            f"| {row['xmin']:.4g} | {fit.x_min * m:.4g} | {row['D']:.4f} | {fit.ks:.4f} | {fit2.ks:.4f} "
            f"| {int(row['num_pl_spikes'])} | {fit.n_tail} | {fit2.n_tail} |"
        )
        if bulk.numel() >= 20:  # WeightWatcher fits fewer than 20 eigenvalues differently (its "small N" fit)
            gaps.append((abs(row["alpha"] - fit.alpha), abs(row["D"] - fit.ks)))
    if gaps:
        print(f"layers with >= 20 levels: max |alpha WW - ours| = {max(g[0] for g in gaps):.2e}, ", end="")
        print(f"max |D WW - ours| = {max(g[1] for g in gaps):.2e}")


if __name__ == "__main__":
    main()
