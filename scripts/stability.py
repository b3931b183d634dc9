"""Stability probe: each loss and its gradient at logits from -1000 to 1000, in fp32, fp16 and bf16.

For a positive example (y = 1), z < 0 is confidently wrong and z > 0 confidently right. The probe
runs the project's own loss arms, plus `naive bce` (sigmoid then BCELoss, both in the low precision:
a network that ends in nn.Sigmoid under 16-bit weights), and records where each loss saturates
or clamps (BCELoss's log at -100), where its gradient vanishes while the example is still wrong,
and where it turns NaN or inf. Writes stability.md (the table), stability.csv and stability.png.

    python scripts/stability.py [--out outputs/stability]
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.heads import build_head
from lossheads.losses import LOSSES

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SHOWN = (-1000.0, -100.0, -30.0, -10.0, 0.0, 10.0, 30.0, 100.0, 1000.0)
VANISHED = 1e-6  # |dL/dz| below this while the loss is still > 1 (a wrong example that no longer learns)


def logit_grid() -> Tensor:
    """-1000..1000, dense near 0 where the losses bend, and every value in SHOWN exactly."""
    magnitudes = torch.logspace(-2, 3, 201, dtype=torch.float64)
    return torch.cat([-magnitudes.flip(0), torch.zeros(1, dtype=torch.float64), magnitudes, torch.tensor(SHOWN)])


def arms() -> dict[str, Callable[[Tensor], Tensor]]:
    """Each arm's loss on one positive example with logit z (a 0-d tensor), as the harness computes it."""
    sigmoid, two_way = build_head("sigmoid", 2), build_head("softmax", 2)
    positive, label = torch.ones(1, 1), torch.ones(1, dtype=torch.long)
    bce, bce_logits = LOSSES["bce"](sigmoid, positive), LOSSES["bce_logits"](sigmoid, positive)
    ce, square = LOSSES["ce"](two_way, label), LOSSES["mse"](two_way, label)
    focal = LOSSES["focal"](sigmoid, positive)

    def two_way_logits(z: Tensor) -> Tensor:  # [0, z]: the two-way softmax whose p1 = sigmoid(z)
        return torch.stack([torch.zeros_like(z), z]).reshape(1, 2)

    return {
        "bce": lambda z: bce(z.reshape(1, 1), positive),
        "naive bce": lambda z: F.binary_cross_entropy(torch.sigmoid(z), positive.reshape(()).to(z.dtype)),
        "bce_logits": lambda z: bce_logits(z.reshape(1, 1), positive),
        "ce (two-way softmax)": lambda z: ce(two_way_logits(z), label),
        "focal": lambda z: focal(z.reshape(1, 1), positive),
        "mse (two-way, on logits)": lambda z: square(two_way_logits(z), label),
    }


def probe(loss_fn: Callable[[Tensor], Tensor], z: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Loss and dL/dz at each logit, computed in `dtype`, returned in float64."""
    values, grads = [], []
    for value in z:
        logit = value.to(dtype).requires_grad_(True)
        loss = loss_fn(logit)
        (grad,) = torch.autograd.grad(loss, logit)
        values.append(loss.detach().double())
        grads.append(grad.double())
    return torch.stack(values), torch.stack(grads)


def summary(z: Tensor, loss: Tensor, grad: Tensor) -> dict[str, str]:
    bad = ~(torch.isfinite(loss) & torch.isfinite(grad))
    vanished = torch.isfinite(loss) & (loss > 1) & (grad.abs() < VANISHED)
    finite_loss = loss[torch.isfinite(loss)]
    return {
        "max loss": f"{finite_loss.max().item():.4g}" if len(finite_loss) else "-",
        "gradient vanishes (wrong, |g|<1e-6)": f"z <= {z[vanished].max().item():g}" if vanished.any() else "never",
        "NaN/inf at": f"|z| >= {z[bad].abs().min().item():g}" if bad.any() else "never",
    }


def cell(loss: float, grad: float) -> str:
    def fmt(x: float) -> str:
        return "nan" if math.isnan(x) else f"{x:.3g}"

    return f"{fmt(loss)} / {fmt(grad)}"


def plot(results: dict[tuple[str, str], tuple[Tensor, Tensor]], z: Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = torch.argsort(z)
    zs = z[order].numpy()
    names = list(dict.fromkeys(name for name, _ in results))
    fig, axes = plt.subplots(2, len(DTYPES), figsize=(5 * len(DTYPES), 8), sharex=True)
    styles = ["-", "--", "-", "--", "-", ":"]  # arms that coincide (bce / naive bce, bce_logits / ce) stay visible
    for col, dtype in enumerate(DTYPES):
        for name, style in zip(names, styles, strict=True):
            loss, grad = (t[order].numpy() for t in results[name, dtype])
            (line,) = axes[0, col].plot(zs, loss, style, label=name, lw=1.5)
            axes[1, col].plot(zs, abs(grad), style, color=line.get_color(), lw=1.5)
            nonfinite = ~(torch.isfinite(torch.tensor(loss)) & torch.isfinite(torch.tensor(grad))).numpy()
            if nonfinite.any():
                axes[1, col].scatter(zs[nonfinite], [1e-9] * int(nonfinite.sum()), marker="x", color=line.get_color())
        axes[0, col].set_title(f"{dtype}: loss for y = 1")
        axes[1, col].set_title(f"{dtype}: |dL/dz| (x: NaN or inf)")
        for row in (0, 1):
            axes[row, col].set_xscale("symlog", linthresh=1)
            axes[row, col].set_yscale("symlog" if row == 0 else "log", **({"linthresh": 1} if row == 0 else {}))
            axes[row, col].grid(alpha=0.3)
            axes[row, col].axvline(0, color="grey", lw=0.5)
        axes[0, col].set_ylim(bottom=0)
        axes[1, col].set_ylim(1e-10, 10)
        axes[1, col].set_xlabel("logit z (z < 0: confidently wrong)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/stability"), help="folder for the table and plot")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    z = logit_grid()
    results = {(name, d): probe(fn, z, DTYPES[d]) for name, fn in arms().items() for d in DTYPES}
    columns = ["loss", "dtype", "max loss", "gradient vanishes (wrong, |g|<1e-6)", "NaN/inf at"]
    shown = [int(torch.nonzero(z == v)[-1]) for v in SHOWN]
    header = columns + [f"z={v:g}" for v in SHOWN]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    with (args.out / "stability.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["loss", "dtype", "z", "value", "grad"])
        for (name, dtype), (loss, grad) in results.items():
            writer.writerows([name, dtype, f"{a:g}", f"{b:g}", f"{c:g}"] for a, b, c in zip(z, loss, grad, strict=True))
            facts = summary(z, loss, grad)
            cells = [cell(loss[i].item(), grad[i].item()) for i in shown]
            lines.append("| " + " | ".join([name, dtype, *facts.values(), *cells]) + " |")
    table = "\n".join(["Loss / gradient dL/dz for a positive example (y = 1) at logit z.", "", *lines, ""])
    (args.out / "stability.md").write_text(table)
    plot(results, z, args.out / "stability.png")
    print(table)
    print(f"stability: {args.out / 'stability.md'}, {args.out / 'stability.csv'}, {args.out / 'stability.png'}")


if __name__ == "__main__":
    main()
