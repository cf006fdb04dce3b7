"""docs/results.md from a suite record and its sweeps' MLflow runs: tables, verdicts, plots.

Every number in a table comes from the sweeps' MLflow runs (`paper_groups.load_groups`, over
`sweep_rows`) or from the benchmark rows recorded in the same suite; facts in the prose
(steps, seeds, split sizes) come from the cells' jobs; verdicts are computed from the numbers
with the criterion stated next to them, so a re-run that moves the numbers moves the words too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phmscale.bench.paper_groups import (
    ALGEBRAS,
    ATTN,
    LM,
    PHM,
    PRUNE,
    RESNET,
    SECTIONS,
    Group,
    load_groups,
    val_size,
)
from phmscale.bench.paper_plots import plot_algebranets, plot_pareto, plot_pruning
from phmscale.tracking.compare import cell as fmt_cell

# "Comparable quality": the mean is at most this many accuracy points below the baseline mean.
COMPARABLE_POINTS = 1.0


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; right-aligned except the first column."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _int(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def fmt_mean_std(g: Group, scale: float = 100.0, digits: int = 1) -> str:
    """'97.2 ± 0.4 (1 failed: n4,seed=2)'; '–' with no value; no ± for one seed."""
    if g.mean is None:
        text = "–"
    else:
        text = f"{g.mean * scale:.{digits}f}" + (
            f" ± {g.std * scale:.{digits}f}" if g.std is not None else "")
    return text + (f" ({len(g.failed)} failed: {', '.join(g.failed)})" if g.failed else "")


def _seeds(g: Group) -> str:
    done = len(g.finished)
    return str(done) + ("" if done == len(g.planned) else f"/{len(g.planned)}")


def _baseline(groups: list[Group], case: str) -> tuple[Group | None, float | None]:
    """The group a section compares against, and its mean quality."""
    base = next((g for g in groups if g.case == case and g.sparsity is None), None)
    return base, (base.mean if base else None)


def _delta(g: Group, base: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "–" if g.mean is None or base is None else f"{(g.mean - base) * scale:+.{digits}f}"


def _split(spec: Any) -> str:
    """'180 images (one = 0.56 points)': what one validation sample is worth."""
    n = val_size(spec)
    return f"{n:,} samples (one = {100 / n:.2g} points)" if n else "the validation split"


def _seed_text(groups: list[Group]) -> str:
    counts = sorted({len(g.planned) for g in groups})
    return " or ".join(str(c) for c in counts) + (" seed" if counts == [1] else " seeds")


def _provenance(record: dict, groups: list[Group]) -> str:
    ids = {e["stem"]: e["sweep_id"] for e in record["sweeps"]}
    stems = dict.fromkeys(g.stem for g in groups)
    return ("*MLflow:* " + "; ".join(
        f"`phmscale compare --sweep {ids[s]} --tracking-uri {record['tracking_uri']}`"
        for s in stems) + " (run ids per row: appendix).\n")


# -- sections --------------------------------------------------------------------------------


def section_phm(groups: list[Group], record: dict) -> str:
    out = ["## 1. PHM-Transformer: quality at 1/n of the parameters\n",
           "Zhang et al. (ICLR 2021) replace every linear layer of a transformer by a PHM layer "
           "(W = Σᵢ Aᵢ ⊗ Sᵢ, learned n×n rules) and report BLEU/accuracy close to the dense "
           "model at ~1/n of the weights — on WMT/IWSLT translation, SNLI/MNLI and other NLP "
           "tasks with models of 10⁷–10⁸ parameters. Here: n = 1 (dense, `algebra: real`) and "
           "PHM at the other n, " + _seed_text(groups) + " each. The patch embedding and "
           "classifier stay real, so the whole-net saving is below n.\n"]
    for stem in dict.fromkeys(g.stem for g in groups):
        rows = [g for g in groups if g.stem == stem]
        dense, d_acc = _baseline(rows, "n1")
        d_params = dense.params if dense else None
        spec = rows[0].spec
        body = [[g.label, _int(g.params),
                 f"{d_params / g.params:.2f}×" if d_params and g.params else "–",
                 fmt_mean_std(g), _delta(g, d_acc), _seeds(g)] for g in rows]
        data = stem.removeprefix("phm-")
        out.append(f"**{data}**: a {spec.model.depth}-block, dim-{spec.model.dim} transformer on "
                   f"`{spec.data.train}`, {spec.train.steps} steps; validation: "
                   f"{_split(spec)}. Val accuracy %, final evaluation, mean ± std over seeds.\n")
        out.append(table(["model", "params", "dense ÷ params", "val acc %", "Δ vs dense (pts)",
                          "seeds"], body))
        out.append(_verdict_phm(rows, dense, data))
    out.append(_provenance(record, groups))
    return "\n".join(out)


def _verdict_phm(rows: list[Group], dense: Group | None, data: str) -> str:
    if dense is None or dense.mean is None:
        return "*Verdict:* no dense baseline finished; no comparison.\n"
    held, lost = [], []
    for g in rows:
        if g is dense or g.mean is None:
            continue
        gap = (dense.mean - g.mean) * 100
        (held if gap <= COMPARABLE_POINTS else lost).append(f"{g.label.split()[-1]} ({-gap:+.1f})")
    text = f"*Verdict ({data}; comparable = at most {COMPARABLE_POINTS:g} point below dense):* "
    if held:
        text += f"the claim holds for {', '.join(held)}"
    if lost:
        text += ("; " if held else "") + f"it does not hold for {', '.join(lost)}"
    return text + ".\n"


def section_attn(groups: list[Group], record: dict) -> str:
    spec = groups[0].spec
    out = ["## 2. Reduced transformers: fewer attention parameters\n",
           "Bermeitinger et al. (2024) drop the MLP, collapse Wq·Wkᵀ (and Wv·Wo) into one "
           "matrix per head or use a symmetric similarity, and report up to 90% fewer "
           "parameters at similar accuracy on MNIST, CIFAR-10 and ImageNet subsets with ViT-"
           f"style models. Here: a {spec.model.depth}-block, dim-{spec.model.dim}, "
           f"{spec.model.heads}-head ViT on `{spec.data.train}`, dense, {spec.train.steps} steps, "
           f"{_seed_text(groups)} per variant; validation: {_split(spec)}.\n"]
    full, f_acc = _baseline(groups, "full")
    f_params = full.params if full else None
    body = [[g.label, _int(g.params),
             f"{(1 - g.params / f_params) * 100:.0f}%" if g.params and f_params else "–",
             fmt_mean_std(g), _delta(g, f_acc), _seeds(g)] for g in groups]
    out.append(table(["variant", "params", "fewer than full", "val acc %", "Δ vs full (pts)",
                      "seeds"], body))
    if full is not None and f_acc is not None:
        ok = [g for g in groups if g is not full and g.mean is not None
              and (f_acc - g.mean) * 100 <= COMPARABLE_POINTS]
        best = max(ok, key=lambda g: 1 - (g.params or 0) / (f_params or 1), default=None)
        if best is not None and f_params:
            cut = (1 - (best.params or 0) / f_params) * 100
            h, d = spec.model.heads, spec.model.dim
            out.append(f"*Verdict:* the largest cut within {COMPARABLE_POINTS:g} point of the full "
                       f"model is **{best.label}**, {cut:.0f}% fewer parameters "
                       f"({'reaches' if cut >= 85 else 'short of'} the paper's ~90%). Without "
                       f"the MLP, what remains is almost all attention matrices, and at {h} heads "
                       f"the collapsed forms hold H·d² weights per collapsed pair ({h}·{d}² here) "
                       "against 2·d² for the factorized Wq, Wk (or Wv, Wo): collapsing removes "
                       "the low-rank factorization, not parameters; only the symmetric form "
                       "(one shared W) cuts further. Differences smaller than the seed std are "
                       "not differences.\n")
        else:
            out.append(f"*Verdict:* no reduced variant stays within {COMPARABLE_POINTS:g} point "
                       "of the full model here: the claim is not reproduced at this scale.\n")
    out.append(_provenance(record, groups))
    return "\n".join(out)


def section_resnet(groups: list[Group], record: dict) -> str:
    spec = groups[0].spec
    out = ["## 3. AlgebraNets: ResNet over algebras\n",
           "Hoffmann et al. (2020) train ResNet-50 on ImageNet (and transformers on enwik8) "
           "with weights in ℂ, ℍ, M₂(ℝ), M₃(ℝ), M₄(ℝ) and find some algebras (M₂(ℝ) above all) "
           "more parameter- and compute-efficient than ℝ at equal accuracy, partly by "
           f"*widening* the algebra nets to match parameters or FLOPs. Here: a CIFAR-style "
           f"{spec.model.arch} (width {spec.model.width}) on `{spec.data.train}` at **equal "
           f"width**, {spec.train.steps} steps, {_seed_text(groups)} per algebra (validation: "
           f"{_split(spec)}), so the algebra nets are smaller than ℝ; the PHC net (Grassucci et "
           "al.) learns its n = 4 rules. *Executed* FLOPs (from the run) are what our kernels do: "
           "they materialize W = Σᵢ Aᵢ ⊗ Sᵢ and run a real convolution of the same size, so they "
           "are equal at equal width. *AlgebraNets* FLOPs (from the spec, "
           "`models.flops.algebra_forward_flops`) count what a kernel exploiting the algebra "
           "would do: a product in an algebra of dimension n costs its multiplications ÷ n² of "
           "the dense one (ℂ 4/4, ℍ 16/16, M₂(ℝ) 8/16, M₄(ℝ) 64/256). Compute density = "
           "AlgebraNets FLOPs per sample ÷ parameters (higher: more work per weight loaded).\n"]
    real, r_acc = _baseline(groups, "real")
    body = [[g.label, _int(g.params), f"{g.flops / 1e6:.2f} M" if g.flops else "–",
             f"{g.algebra_flops / 1e6:.2f} M" if g.algebra_flops else "–",
             f"{g.density:,.0f}" if g.density else "–", fmt_mean_std(g), _delta(g, r_acc),
             f"{g.mean * 100 / (g.params / 1e3):.2f}" if g.mean is not None and g.params
             else "–"] for g in groups]
    out.append(table(["algebra", "params", "executed FLOPs", "AlgebraNets FLOPs",
                      "compute density", "val acc %", "Δ vs ℝ (pts)", "acc % per 1k params"],
                     body))
    if real is not None and r_acc is not None:
        close = [g for g in groups if g is not real and g.mean is not None
                 and (r_acc - g.mean) * 100 <= COMPARABLE_POINTS]
        fewer_flops = [g.label for g in close if g.algebra_flops and real.algebra_flops
                       and g.algebra_flops < real.algebra_flops]
        top = max(g.mean or 0.0 for g in groups)
        at_top = sum(1 for g in groups if g.mean == top)
        n = val_size(spec)
        out.append(f"*Verdict (comparable = within {COMPARABLE_POINTS:g} point of ℝ):* "
                   + (f"{', '.join(g.label for g in close)} match ℝ with fewer parameters — "
                      "more parameter-efficient, as AlgebraNets report; "
                      + (f"only {', '.join(fewer_flops)} also need fewer (AlgebraNets) FLOPs, "
                         "and none runs fewer executed FLOPs with our dense-materializing "
                         "kernels. " if fewer_flops else "none needs fewer FLOPs. ")
                      if close else "no algebra stays within a point of ℝ here. ")
                   + f"{at_top} of {len(groups)} nets reach the same {top * 100:.1f}%"
                   + (f" on a {n:,}-sample split, where one sample is {100 / n:.2g} points"
                      if n else "") + ": with so few seeds this table shows whether the small "
                   "algebra nets lose anything *on this task*, not which algebra is best.\n")
    out.append(_provenance(record, groups))
    return "\n".join(out)


def section_lm(groups: list[Group], record: dict) -> str:
    spec = groups[0].spec
    step_bytes = spec.data.batch_size * spec.model.seq_len
    out = ["## 4. Byte-level language model\n",
           "The PHM paper reports language modelling and translation at 1/n of the weights; "
           f"AlgebraNets report enwik8 bits per character. Here: a {spec.model.depth}-block, "
           f"dim-{spec.model.dim} causal transformer on `{spec.data.train}`, {spec.train.steps} "
           f"steps of {step_bytes:,} bytes ({spec.train.steps * step_bytes / 1e6:.2g} MB seen), "
           f"{_seed_text(groups)}; metric: validation bits per byte (lower is better) over "
           f"{val_size(spec) or 0:,} held-out bytes.\n"]
    dense, d_bpb = _baseline(groups, "n1")
    body = [[g.label, _int(g.params), fmt_mean_std(g, 1, 3), _delta(g, d_bpb, 1.0, 3)]
            for g in groups]
    out.append(table(["model", "params", "val bits/byte", "Δ vs dense"], body))
    if d_bpb is not None:
        worse = [f"{g.label} ({g.mean - d_bpb:+.3f})" for g in groups
                 if g is not dense and g.mean is not None]
        out.append("*Verdict:* " + ", ".join(worse) + " bits/byte against dense. A net far "
                   f"from convergence at {spec.train.steps} steps can lead by learning faster "
                   "early; differences under ~0.05 bits/byte are within what a single short "
                   "run resolves.\n")
    out.append(_provenance(record, groups))
    return "\n".join(out)


def pruning_curves(prune: list[Group], resnet: list[Group]
                   ) -> dict[str, list[tuple[float, float, Group]]]:
    """Per pruned algebra (its ResNet label): (element sparsity, final val acc, group), the
    0% point being that algebra's unpruned ResNet cell."""
    curves: dict[str, list[tuple[float, float, Group]]] = {}
    for case in dict.fromkeys(g.case for g in prune):
        base = next((g for g in resnet if g.case == case), None)
        points = [(0.0, base.mean, base)] if base is not None and base.mean is not None else []
        points += [(g.sparsity or 0.0, g.mean, g) for g in prune
                   if g.case == case and g.mean is not None]
        curves[ALGEBRAS.get(case, case)] = sorted(points, key=lambda p: p[0])
    return curves


def section_prune(prune: list[Group], resnet: list[Group], record: dict) -> str:
    p = prune[0].spec.train.prune
    steps = prune[0].spec.train.steps
    out = ["## 5. Pruning whole algebra elements\n",
           "Hoffmann et al. (2020) prune whole algebra elements (all n components of a weight "
           "together, by their L2 norm) of ResNet-50s on ImageNet and report that algebra nets "
           "keep more accuracy than ℝ at equal sparsity — a pruned ℍ element frees 4 weights and "
           "a 4-wide multiply, so the structure survives pruning. Here: the ResNets of section "
           "3, pruned by `train.prune` in the training loop: sparsity ramps up cubically (Zhu & "
           f"Gupta 2017) from step {p.start_step} to {p.last_step} of {steps}, every "
           f"{p.every} steps, then {steps - p.last_step} steps fine-tune at the final sparsity; "
           f"{p.scope} magnitude ranking"
           + ("; stem and classifier dense" if p.keep_first_last else "")
           + f". {_seed_text(prune).capitalize()} per cell; the 0% column is section 3's "
           "unpruned cell.\n"]
    curves = pruning_curves(prune, resnet)
    levels = sorted({s for pts in curves.values() for s, _, _ in pts})
    body = []
    for name, pts in curves.items():
        by_level = {s: acc for s, acc, _ in pts}
        top = pts[-1] if pts and pts[-1][0] > 0 else None
        left = f"{_int(top[2].params_nonzero)} at {top[0] * 100:.0f}%" if top else "–"
        row = [name, _int(pts[0][2].params if pts else None)]
        row += [f"{by_level[s] * 100:.1f}" if s in by_level else "–" for s in levels]
        body.append(row + [left])
    header = ["algebra", "params (unpruned)"] + [f"{s * 100:.0f}% pruned" for s in levels]
    out.append("Val accuracy % after the fine-tune, by the fraction of algebra elements "
               "pruned:\n")
    out.append(table(header + ["params left (most pruned)"], body))
    out.append(_verdict_prune(curves, val_size(prune[0].spec)))
    out.append(_provenance(record, prune))
    return "\n".join(out)


def _verdict_prune(curves: dict[str, list[tuple[float, float, Group]]], n: int | None) -> str:
    """Accuracy lost from 0% to the highest sparsity, per algebra; which keeps more, when
    both reached the same sparsity."""
    drops = {name: ((pts[0][1] - pts[-1][1]) * 100, pts[-1][0]) for name, pts in curves.items()
             if len(pts) > 1 and pts[0][0] == 0.0}
    if not drops:
        return "*Verdict:* no pruned cell finished next to its unpruned one; no comparison.\n"
    text = "*Verdict:* from 0% to the highest sparsity, " + ", ".join(
        f"{name} loses {drop:.1f} points at {top * 100:.0f}%" for name, (drop, top)
        in drops.items())
    one = 100 / n if n else 0.0  # points one validation sample is worth
    if len(drops) == 2:
        (a, (da, ta)), (b, (db, tb)) = drops.items()
        if ta != tb:
            text += "; they stop at different sparsities (a cell failed), so no comparison"
        elif abs(da - db) <= one * 1.01:
            text += (f"; the difference is within one sample ({one:.2g} points) of the "
                     f"{n:,}-sample split, so neither keeps more")
        else:
            keeper, other = (a, b) if da < db else (b, a)
            text += (f"; {keeper} keeps more than {other}, "
                     + ("as AlgebraNets report" if other == ALGEBRAS["real"]
                        else "the opposite of AlgebraNets' finding"))
    return text + (". With one seed per cell this shows whether element pruning through the "
                   "training loop holds accuracy, not a ranking of algebras.\n")


def section_bench(bench: dict[str, list[dict[str, Any]]]) -> str:
    out = ["## 6. Layer and engine benchmarks (same run, after the sweeps)\n",
           "`phmscale bench layer --json`: PHMLinear against `nn.Linear` and a loop-of-kron "
           "reference (`phm_vs_dense` > 1: PHM faster). `phmscale bench step jobs/quickstart."
           "yaml --json`: the full engine (DeepSpeed + WebDataset) against a bare PyTorch "
           "loop on the same batches held in memory (`engine_vs_bare`), and the engine alone "
           "on those in-memory batches (`engine_mem_vs_bare`: DeepSpeed and the loop without "
           "the data pipeline), over the job's steps (at most 300); `engine_workers_*` reads "
           "in a loader worker that shares the cores with the step. Both run in the "
           "command's own process once the sweeps have ended; `load` is the machine's "
           "1-minute load average at the time (above the core count: other work competed).\n"]
    for name in ("layer", "step"):
        rows = bench.get(name) or []
        if rows:
            header = list(rows[0])
            out.append(f"**bench {name}**\n")
            out.append(table(header, [[fmt_cell(r.get(c)) for c in header] for r in rows]))
    if not bench:
        out.append("(not run in this suite)\n")
    return "\n".join(out)


def _machine(record: dict) -> str:
    m = record["machine"]
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU; Python "
            f"{m['python']}, torch {m['torch']}, Ray {m['ray']}, DeepSpeed {m['deepspeed']}, "
            f"MLflow {m['mlflow']}")


def _appendix(groups: list[Group]) -> str:
    out = ["## Appendix: the MLflow runs behind every row\n",
           "Open one with `mlflow ui --backend-store-uri <store>` and search its id, or "
           "`phmscale compare RUN_ID… --tracking-uri <store>`.\n"]
    rows = [[g.label, f"{g.stem}: {g.planned[0].split(',seed=')[0]}",
             " ".join(f"`{c['run_id']}`" for c in g.cells) or "–"] for g in groups]
    out.append(table(["row", "sweep: cell", "run ids (seed order)"], rows))
    return "\n".join(out)


def _head(record: dict, groups: list[Group]) -> list[str]:
    spec = groups[0].spec if groups else None
    planned = sum(len(g.planned) for g in groups)
    done = sum(len(g.finished) for g in groups)
    steps = sorted({g.spec.train.steps for g in groups})
    per = (f"{spec.resources.workers} worker × {spec.resources.cpus_per_worker:g} CPU, "
           f"DeepSpeed ZeRO-{spec.train.zero_stage}") if spec else ""
    sweeps = ", ".join(f"{e['stem']} {e['seconds'] / 60:.1f} min" for e in record["sweeps"])
    return [
        "# Reproducing the papers at small scale\n",
        "Generated by `" + record["command"] + "` — do not edit by hand; re-run it."
        + (" **QUICK RUN: 20-step cells, the numbers mean nothing.**" if record["quick"] else ""),
        "",
        f"- **Machine:** {_machine(record)}.",
        f"- **Suite:** `{record['suite']}`: {len(record['sweeps'])} sweeps (jobs/paper/sweeps/), "
        f"{planned} cells ({done} finished), run by `phmscale sweep`'s path: each sweep one Ray "
        f"job on one Ray cluster ({record['address']}) running Ray Tune, {record['parallel']} "
        f"cells in flight, each cell a trial training the job's Ray Train trainer ({per}, "
        f"WebDataset shards); sweeps one after the other ({sweeps}); training "
        f"{record['train_seconds'] / 60:.1f} min, everything {record['total_seconds'] / 60:.1f}"
        " min.",
        f"- **MLflow store:** `{record['tracking_uri']}`, experiment `paper`: one parent run "
        "per sweep (tag `phmscale.sweep`), a nested child run per cell.",
        "- **Scale:** the papers train on ImageNet, WMT/IWSLT, SNLI/MNLI, CIFAR and enwik8 with "
        "10⁷–10⁸-parameter models on GPUs for hours to days. These are 10⁴–10⁶-parameter "
        f"models trained for {'–'.join(str(s) for s in steps[::max(len(steps) - 1, 1)])} steps "
        "on CPU: they test whether each claim's *direction* shows up at toy scale, not the "
        "papers' numbers.",
        "",
    ]


def build_report(record: dict, out: Path) -> list[Path]:
    """Write `out` and its plots (in `<out dir>/<out stem>/`); returns the paths written."""
    groups = load_groups(record)
    order = list(SECTIONS)  # the report's order, not the running order
    groups.sort(key=lambda g: order.index(g.stem) if g.stem in order else len(order))
    by = {s: [g for g in groups if g.section == s] for s in dict.fromkeys(SECTIONS.values())}
    assets = out.parent / out.stem
    assets.mkdir(parents=True, exist_ok=True)
    curves = pruning_curves(by[PRUNE], by[RESNET])
    written = [plot_pareto(by, assets / "pareto.png"),
               plot_algebranets(by[RESNET], assets / "algebranets.png"),
               plot_pruning({k: [(s, a * 100) for s, a, _ in v] for k, v in curves.items()},
                            assets / "pruning.png") if by[PRUNE] else None]
    written = [p for p in written if p is not None]
    rel = {p.name: f"{out.stem}/{p.name}" for p in written}

    def image(name: str, alt: str) -> str:
        return f"![{alt}]({rel[name]})\n" if name in rel else ""

    body = [image("pareto.png", "quality against parameters"),
            section_phm(by[PHM], record) if by[PHM] else "",
            section_attn(by[ATTN], record) if by[ATTN] else "",
            section_resnet(by[RESNET], record) if by[RESNET] else "",
            image("algebranets.png", "AlgebraNets"),
            section_lm(by[LM], record) if by[LM] else "",
            section_prune(by[PRUNE], by[RESNET], record) if by[PRUNE] else "",
            image("pruning.png", "pruning"),
            section_bench(record.get("bench") or {}), _appendix(groups)]
    out.write_text("\n".join(_head(record, groups)) + "\n" + "\n".join(b for b in body if b))
    return [out, *written]
