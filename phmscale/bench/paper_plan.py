"""The cells of `phmscale bench paper`: which job, which overrides, which seed.

A cell is one training run: a job file under jobs/paper/ plus `--set`-style overrides. Cells
that differ only in the seed form a group (one table row, mean ± std). Every cell gets a job
name of its own — and so its own checkpoint directory — so no cell ever resumes another.

Sizing (measured on the 2-core machine of docs/results.md, 2 cells in flight, one torch thread
each, the machine shared): a cell costs ~35 s before its first step (driver, Ray Train, DeepSpeed
start-up), then a digits PHM-ViT cell (400 steps) ends at ~70 s, an MNIST-1D cell (600 steps)
~90 s, a ResNet-20 cell (300 steps) ~85 s, an LM cell (800 steps of 16×128 bytes) ~210 s:
45 cells took 33 min, the benchmarks 3 more; the 6 pruning cells add ~5 min.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

JOBS = Path("jobs/paper")
SEEDS = (0, 1, 2)

# Section keys, in the order the report shows them.
PHM, ATTN, RESNET, LM, PRUNE = "phm", "attn", "resnet", "lm", "prune"


@dataclass(frozen=True)
class Cell:
    section: str  # PHM | ATTN | RESNET | LM
    group: str  # one table row: cells that differ only in the seed
    label: str  # the row's name in the table
    job: str  # job file, relative to the repository root
    sets: tuple[str, ...] = ()  # --set overrides (the seed is added by `overrides`)
    seed: int = 0
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Unique within a suite: the group and the seed."""
        return f"{self.group}-s{self.seed}"

    def overrides(self) -> list[str]:
        return [*self.sets, f"train.seed={self.seed}"]


# -- the sections ----------------------------------------------------------------------------

# PHM-Transformer at n = 1 (dense: algebra real), 2, 4, 8 on two data sets.
PHM_DATA = {"digits": "phm-vit-digits.yaml", "mnist1d": "phm-seq-mnist1d.yaml"}
PHM_NS = (1, 2, 4, 8)

# Reduced transformers (Bermeitinger et al. 2024), dense, on digits: key → (label, overrides).
ATTN_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "full": ("full (MLP)", ("model.attention=standard", "model.mlp_ratio=2")),
    "nomlp": ("no MLP", ("model.attention=standard", "model.mlp_ratio=0")),
    "qk": ("collapsed QK", ("model.attention=collapsed_qk", "model.mlp_ratio=0")),
    "sym": ("symmetric QK", ("model.attention=symmetric", "model.mlp_ratio=0")),
    "qkvo": ("collapsed QK+VO", ("model.attention=collapsed_qk_vo", "model.mlp_ratio=0")),
    "minimal": ("minimal (QK, no VO)", ("model.attention=collapsed_qk_vo",
                                        "model.value_output=none", "model.mlp_ratio=0")),
}

# AlgebraNet ResNet-20s on digits: key → (label, overrides); PHC: learned rules at n = 4.
RESNET_ALGEBRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "real": ("ℝ (real)", ("model.algebra=real",)),
    "complex": ("ℂ (complex)", ("model.algebra=complex",)),
    "quaternion": ("ℍ (quaternion)", ("model.algebra=quaternion",)),
    "m2r": ("M₂(ℝ)", ("model.algebra=m2r",)),
    "m4r": ("M₄(ℝ)", ("model.algebra=m4r",)),
    "phc4": ("PHC n=4 (learned)", ("model.algebra=phm", "model.n=4")),
}

# Byte-level LM: dense against PHM n = 2, 4.
LM_NS = (1, 2, 4)

# Element pruning (AlgebraNets) of two of the ResNet-20s: ℝ (an element is one weight) and ℍ
# (an element is 4). The 0% row of each is the unpruned cell of the ResNet section. Pruning
# ramps from step 50 to 200 of 300 (train.prune: cubic, every 10 steps), then 100 steps
# fine-tune at the final sparsity; stem and classifier stay dense.
PRUNE_ALGEBRAS = ("real", "quaternion")
PRUNE_SPARSITIES = (0.5, 0.75, 0.9)
PRUNE_SETS = ("train.prune.start_step=50", "train.prune.end_step=200", "train.prune.every=10",
              "train.prune.scope=global")


def _phm_sets(n: int) -> tuple[str, ...]:
    return ("model.algebra=real", "model.n=1") if n == 1 else ("model.algebra=phm", f"model.n={n}")


QUICK_SETS = ("train.steps=20", "train.eval_every=20", "train.log_every=5",
              "checkpoint.every=20", "train.schedule.warmup_steps=2")


def plan(quick: bool = False) -> list[Cell]:
    """Every cell of the suite in submission order (longest first: the tail stays short).

    quick: three tiny cells (20 steps, one seed) covering the PHM, ResNet and LM paths, for
    smoke tests; their numbers mean nothing.
    """
    if quick:
        return [
            Cell(PHM, "phm-digits-n4", "digits n=4", str(JOBS / PHM_DATA["digits"]),
                 (*_phm_sets(4), *QUICK_SETS)),
            Cell(RESNET, "resnet-quaternion", "ℍ (quaternion)",
                 str(JOBS / "resnet20-digits.yaml"), ("model.algebra=quaternion", *QUICK_SETS)),
            Cell(LM, "lm-n4", "PHM n=4", str(JOBS / "lm-pystdlib.yaml"),
                 (*_phm_sets(4), *QUICK_SETS, "train.eval_batches=2")),
        ]
    cells: list[Cell] = []
    for key, (label, sets) in RESNET_ALGEBRAS.items():
        cells.append(Cell(RESNET, f"resnet-{key}", label,
                          str(JOBS / "resnet20-digits.yaml"), sets))
    for algebra in PRUNE_ALGEBRAS:
        name = RESNET_ALGEBRAS[algebra][0]
        for sparsity in PRUNE_SPARSITIES:
            pct = round(sparsity * 100)
            cells.append(Cell(PRUNE, f"prune-{algebra}-{pct}", f"{name} {pct}%",
                              str(JOBS / "resnet20-digits.yaml"),
                              (*RESNET_ALGEBRAS[algebra][1], *PRUNE_SETS,
                               f"train.prune.sparsity={sparsity}"),
                              extra={"algebra": algebra, "sparsity": str(sparsity)}))
    for n in LM_NS:
        label = "dense" if n == 1 else f"PHM n={n}"
        cells.append(Cell(LM, f"lm-n{n}", label, str(JOBS / "lm-pystdlib.yaml"), _phm_sets(n)))
    for data, job in PHM_DATA.items():
        for n in PHM_NS:
            for seed in SEEDS:
                cells.append(Cell(PHM, f"phm-{data}-n{n}", f"{data} n={n}", str(JOBS / job),
                                  _phm_sets(n), seed, {"data": data, "n": str(n)}))
    for key, (label, sets) in ATTN_VARIANTS.items():
        for seed in SEEDS[:2]:
            cells.append(Cell(ATTN, f"attn-{key}", label,
                              str(JOBS / "attn-digits.yaml"), sets, seed))
    return cells
