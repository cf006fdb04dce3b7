"""The report's plots: quality against parameters (the Pareto view) and AlgebraNets' FLOPs view.

Points are cell groups (mean over seeds, error bars ± one std) rather than runs, which is why
these are drawn here and not with `phmscale.tracking.compare.plot` (one point per run).
"""

from __future__ import annotations

from pathlib import Path

from phmscale.bench.paper_groups import ATTN, LM, PHM, RESNET, Group

STYLE = {"digits PHM-ViT": "o-", "mnist1d PHM-Transformer": "s-", "reduced attention": "^",
         "ResNet algebras": "D", "byte LM": "v-"}


def _points(groups: list[Group], x_attr: str = "params", scale: float = 100.0):  # noqa: ANN202
    pts = []
    for g in groups:
        x = getattr(g, x_attr)
        if g.mean is not None and x:
            pts.append((x, g.mean * scale, (g.std or 0.0) * scale, g.label))
    return sorted(pts)


def _log_x(ax) -> None:  # noqa: ANN001
    """Log x with ticks at 1, 2, 5 × 10^k as "20k", "50k": matplotlib's default minor labels
    ("2×10⁴ 3×10⁴ …") collide, and a range inside one decade would get none at all."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw(ax, pts, style: str, name: str, annotate: bool = True) -> None:  # noqa: ANN001
    if not pts:
        return
    xs, ys, es, labels = zip(*pts, strict=True)
    ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, ms=5, label=name)
    if annotate:
        for x, y, label in zip(xs, ys, labels, strict=True):
            ax.annotate(label.split(" ", 1)[-1] if label.startswith(("digits", "mnist1d"))
                        else label, (x, y), fontsize=6, alpha=0.8, xytext=(3, 3),
                        textcoords="offset points")


def plot_pareto(sections: dict[str, list[Group]], out: Path) -> Path | None:
    """Left: 8×8 digits (PHM-ViT n, reduced attention, ResNets); middle: MNIST-1D; right: LM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(sections.values()):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    phm = sections.get(PHM, [])
    ax = axes[0]
    _draw(ax, _points([g for g in phm if g.stem == "phm-digits"]), STYLE[
        "digits PHM-ViT"], "PHM-ViT, n = 1, 2, 4, 8")
    _draw(ax, _points(sections.get(ATTN, [])), STYLE["reduced attention"],
          "reduced attention (dense)")
    _draw(ax, _points(sections.get(RESNET, [])), STYLE["ResNet algebras"],
          "ResNet algebras")
    ax.set_title("8×8 digits: val accuracy vs parameters")
    ax = axes[1]
    _draw(ax, _points([g for g in phm if g.stem == "phm-mnist1d"]),
          STYLE["mnist1d PHM-Transformer"], "PHM-Transformer, n = 1, 2, 4, 8")
    ax.set_title("MNIST-1D: val accuracy vs parameters")
    for ax in axes[:2]:
        ax.set_ylabel("val accuracy % (mean ± std over seeds)")
    ax = axes[2]
    _draw(ax, _points(sections.get(LM, []), scale=1.0), STYLE["byte LM"], "dense, PHM n = 2, 4")
    ax.set_title("byte LM (pystdlib): val bits/byte vs parameters")
    ax.set_ylabel("val bits per byte (lower is better)")
    for ax in axes:
        _log_x(ax)
        ax.set_xlabel("parameters")
        ax.grid(alpha=0.3)
        if ax.lines or ax.collections:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_algebranets(groups: list[Group], out: Path) -> Path | None:
    """Accuracy against parameters and against AlgebraNets FLOPs, one point per algebra."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not groups:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, attr, name in ((axes[0], "params", "parameters"),
                           (axes[1], "algebra_flops", "AlgebraNets FLOPs per sample")):
        for g in groups:
            _draw(ax, _points([g], attr), "o", g.label, annotate=False)
        _log_x(ax)
        ax.set_xlabel(name)
        ax.set_ylabel("val accuracy % (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.set_title(f"ResNet, digits: accuracy vs {name.split(' per')[0]}", fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_pruning(curves: dict[str, list[tuple[float, float]]], out: Path) -> Path | None:
    """Val accuracy against element sparsity, one line per algebra: (sparsity, accuracy %)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(curves.values()):
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, pts in curves.items():
        if pts:
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot([x * 100 for x in xs], ys, "o-", label=label)
    ax.set_xlabel("algebra elements pruned (%)")
    ax.set_ylabel("val accuracy % (mean over seeds)")
    ax.set_title("ResNet, digits: accuracy vs element sparsity", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
