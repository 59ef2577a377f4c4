"""Reproduce: pure Mamba-2 lags the transformer on phonebook lookup; a hybrid with attention closes the gap.

    python benchmarks/reproduce.py configs/repro_mamba2_hybrid.py  # the sweep: 3 variants x 2 seeds
    python benchmarks/results.py                                   # docs/RESULTS.md, docs/figures/mamba2_hybrid.png

Should show: on configs/phonebook_tiny.py (4 entries, 1-token names, 2-token numbers, 20 tokens,
vocabulary 64: book "c SEP u v" x 4, then "QUERY c SEP" and the two answer tokens) three
parameter-matched models of width 64 trained for STEPS steps on the same examples: a transformer
(4 x attention + MLP, RoPE), a pure Mamba-2 (7 SSD mixers, no MLP) and the Mamba-2 hybrid
"M-M*-M-" (3 SSD mixers, 1 attention layer without position embedding, 3 MLPs: the paper's
~43/7/50 mix at 7 layers), their eval accuracy (per answer token) and eval sequence accuracy (both
tokens of the number right), with eval-accuracy curves. Chance is 1/31 per token (31 number
tokens); 1/4 is a model that names one of the 4 numbers in the book without matching the name.
The verdict follows the rule in `verdict` below, fixed before the runs.

What this measures at CPU scale (say so with the figures): sample efficiency early in training,
not the solved-task gap of the paper. Before the sweep (2026-12-07, 2 busy cores), no setting
tried in the 35 minutes allowed had the transformer solve the lookup in a few CPU minutes: width
128 (~0.8M parameters), 8 entries / 2-token names, 800 steps: eval accuracy 0.12 (seq 0.006);
4 entries / 1-token names: 0.29 (seq 0.08) at 800 steps; 4-token numbers: 0.31 (seq 0.01) at 1000;
width 64 (this row), lr 3e-3: 0.30 (seq 0.06) at 1000 steps, 0.39 (seq 0.12) at 3000, still rising;
lr 1e-2: 0.10 at 1000. The hybrid at width 64 had 0.08 at 1000 steps, the pure Mamba-2 at width
128 chance (0.04) at 200. So at STEPS the transformer is expected near the within-book floor (1/4)
and the result is read as such (the verdict's reason states the transformer's sequence accuracy).

Parameters (jax.eval_shape): transformer 217,664 (`model.d_ff=320`), pure Mamba-2 216,680,
hybrid 218,376 (phonebook_tiny.py's `model.d_ff=288`): within 0.8% of each other. Same lr
(3e-3 -> 3e-4 cosine, 100 warmup), batch 64, seed -> same examples for all three.
Budget: 6 runs, ~27 min on 2 cores (BUDGET below; the sweep took 29 min at load 6-12);
`--dry-run` prints the plan.
Measured (2026-12-07, 2 seeds, 800 steps): final eval accuracy transformer 0.264 ± 0.023, pure
Mamba-2 0.164 ± 0.086 (seeds 0.104 and 0.225), hybrid 0.050 ± 0.009; eval seq accuracy 0.051,
0.027, 0.002: "not reproduced" by the rule (the transformer - Mamba-2 gap +0.100 ± 0.108 is not
clear beyond the seed spread, and the hybrid is the slowest of the three to leave chance, not in
between). No model solved the lookup at this budget.
Accelerator version: configs/mamba2_8b.py (pure Mamba-2, 56 layers) and
configs/mamba2_hybrid_8b.py (24 Mamba-2 + 4 attention + 28 MLP), and a transformer of the same
shape (configs/mamba2_hybrid_8b.py with `model.layer_pattern=` 28 x "*-", `model.pos=rope`),
trained on a real corpus then evaluated on the phonebook at growing book sizes (the paper's
Fig. 5 / Repeat After Me Fig. 1c), or trained on phonebook_tiny.py's task at ~10^4 steps.
"""
import statistics

from benchmarks.claims import Compare, Curves, Figure, Row, Variant, Verdict

CFG = "configs/phonebook_tiny.py"
STEPS = 800
TRANSFORMER = ("model.layer_pattern=*-*-*-*-", "model.n_layers=8", "model.d_ff=320",
               "model.pos=rope")
MAMBA2 = ("model.layer_pattern=", "model.n_layers=7")
# Speeds measured 2026-12-07 on the 2-core box shared with other jobs (load 6-12), width 64, batch
# 64 x 20 tokens. Before the sweep: transformer 3000 steps in 393 s wall, hybrid 1000 steps in
# 363 s (a 94 s compile: its pattern is unrolled). In the sweep itself (17:51-18:20 UTC, 29 min
# for the 6 runs): transformer 800 steps in ~1:50 (7-9 steps/s; 3 min per run with compile ~20 s
# and the evals), pure Mamba-2 in 4:05-5:45 (2.4-3.6 steps/s; 5-7 min per run, compile ~40 s),
# hybrid in ~2:25 (6.2-6.7 steps/s; 4 min per run, compile ~60 s).
TR_SPS, HY_SPS, MB_SPS = 7.5, 5.5, 2.5
BUDGET = (f"6 runs of {STEPS} steps: transformer ~{TR_SPS} steps/s + 60 s, hybrid ~{HY_SPS} + "
          f"100 s (compile), pure Mamba-2 ~{MB_SPS} + 90 s: ~27 min on the 2-core box at load "
          "6-12 (the sweep took 29 min)")

SOLVED = 0.9         # eval_seq_accuracy of a transformer that solves the lookup
MARGIN = 0.05        # accuracy points: "within" / "clear"


def _diff(m, a: str, b: str, fig: str = "eval_accuracy") -> tuple[float, float]:
  """a - b per seed (same seed: same examples), then mean and sample std."""
  va, vb = m.values.get(a, {}).get(fig, {}), m.values.get(b, {}).get(fig, {})
  d = [va[s] - vb[s] for s in sorted(set(va) & set(vb))]
  if not d:
    return float("nan"), float("nan")
  return statistics.fmean(d), statistics.stdev(d) if len(d) > 1 else 0.0


def verdict(m) -> Verdict:
  """On final eval accuracy (per answer token), per seed then mean ± std: the gap = transformer
  minus pure Mamba-2 is "clear" if its mean exceeds both 0.05 and its std. reproduced: the gap is
  clear and the hybrid is within 0.05 of the transformer or above it. direction holds: the gap is
  clear and the hybrid recovers at least half of it (hybrid minus Mamba-2 >= gap / 2), or the gap
  is clear only on the mean (> 0 but not > 0.05 and its std) with the hybrid within 0.05 of the
  transformer. not reproduced: otherwise (no gap, or the hybrid recovers less than half). The
  reason states whether the transformer solved the lookup (eval seq accuracy >= 0.9); below that
  the verdict is about sample efficiency at STEPS steps, not the paper's solved-task gap."""
  gap, gap_sd = _diff(m, "transformer", "mamba2")
  hy_tr, hy_tr_sd = _diff(m, "hybrid", "transformer")
  hy_mb, _ = _diff(m, "hybrid", "mamba2")
  clear = gap > MARGIN and gap > gap_sd
  close = hy_tr >= -MARGIN
  half = gap > 0 and hy_mb >= gap / 2
  seq = m.stat("transformer", "eval_seq_accuracy").mean
  acc = {v: m.stat(v, "eval_accuracy") for v in ("transformer", "mamba2", "hybrid")}
  why = (f"final eval accuracy transformer {acc['transformer'].mean:.3f}, pure Mamba-2 "
         f"{acc['mamba2'].mean:.3f}, hybrid {acc['hybrid'].mean:.3f} (chance 0.032, one of the "
         f"book's numbers 0.25); transformer - Mamba-2 {gap:+.3f} ± {gap_sd:.3f} "
         f"({'clear' if clear else 'not clear'}), hybrid - transformer {hy_tr:+.3f} ± "
         f"{hy_tr_sd:.3f}, hybrid - Mamba-2 {hy_mb:+.3f}"
         + (f" ({max(hy_mb / gap, 0):.0%} of the gap recovered)" if gap > 0 else ""))
  why += (f"; the transformer {'solved' if seq >= SOLVED else 'did not solve'} the lookup "
          f"(eval seq accuracy {seq:.3f})"
          + ("" if seq >= SOLVED else f": a sample-efficiency comparison at {STEPS} steps"))
  if clear and close:
    return Verdict("reproduced", why)
  if (clear and half) or (gap > 0 and close):
    return Verdict("direction holds", why)
  return Verdict("not reproduced", why)


ROW = Row(
    name="mamba2_hybrid",
    title="Mamba-2 vs Mamba-2-Hybrid vs transformer: phonebook lookup",
    claim=("Pure Mamba-2 lags a transformer of the same size on in-context retrieval such as "
           "phonebook lookup (given a book of name -> number entries, recall the queried name's "
           "number), its fixed-size state being the bottleneck; a hybrid that keeps mostly Mamba-2 "
           "layers and adds a few attention layers (8B: 24 Mamba-2, 4 attention, 28 MLP) closes "
           "the gap to the transformer."),
    citation=("R. Waleffe et al., *An Empirical Study of Mamba-based Language Models*, "
              "arXiv:2406.07887 (2024); S. Jelassi et al., *Repeat After Me: Transformers are "
              "Better than State Space Models at Copying*, arXiv:2402.01032 (2024)"),
    variants=(
        Variant("transformer", CFG, TRANSFORMER, label="transformer (4 × attention + MLP)",
                steps_per_sec=TR_SPS, startup_s=60.0),
        Variant("mamba2", CFG, MAMBA2, label="pure Mamba-2 (7 × SSD)", steps_per_sec=MB_SPS,
                startup_s=90.0),
        Variant("hybrid", CFG, (), label="Mamba-2 hybrid M-M*-M-", steps_per_sec=HY_SPS,
                startup_s=100.0),
    ),
    seeds=2,
    overrides=(f"train.steps={STEPS}", "train.eval_every=100", "train.log_every=20",
               "ckpt.every=400"),
    figures={
        "eval_accuracy": Figure("eval_accuracy", label="final eval accuracy"),
        "eval_seq_accuracy": Figure("eval_seq_accuracy", label="final eval seq accuracy"),
        "eval_accuracy@400": Figure("eval_accuracy", step=400, label="eval accuracy @400"),
        "eval_loss": Figure("eval_loss", label="final eval loss"),
    },
    headline=(
        Compare("pure Mamba-2 vs transformer, final eval accuracy", "mamba2", "transformer",
                "eval_accuracy"),
        Compare("hybrid vs transformer, final eval accuracy", "hybrid", "transformer",
                "eval_accuracy"),
        Compare("hybrid vs transformer, final eval loss", "hybrid", "transformer"),
    ),
    verdict=verdict,
    panels=(
        Curves("eval accuracy (per answer token)", ("transformer", "mamba2", "hybrid"),
               "eval_accuracy"),
        Curves("eval seq accuracy (whole number)", ("transformer", "mamba2", "hybrid"),
               "eval_seq_accuracy"),
        Curves("train loss (answer tokens)", ("transformer", "mamba2", "hybrid"), "loss"),
    ),
    accelerator=("`configs/mamba2_8b.py` (pure Mamba-2, 56 layers) and "
                 "`configs/mamba2_hybrid_8b.py` (24 Mamba-2 + 4 attention + 28 MLP), and a "
                 "transformer of the same shape (`configs/mamba2_hybrid_8b.py` with "
                 "`model.layer_pattern=` 28 × `*-`, `model.pos=rope`), on the phonebook at "
                 "growing book sizes (`data.source=phonebook data.num_entries=...`)"),
    budget=BUDGET,
    startup_s=60.0,
)
