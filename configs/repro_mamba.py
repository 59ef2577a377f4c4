"""Reproduce: Mamba's selective SSM solves selective copying (an LTI ablation does not) and its induction heads extrapolate.

    python benchmarks/reproduce.py configs/repro_mamba.py          # the sweep: 3 variants x 2 seeds
    python benchmarks/results.py                                   # docs/RESULTS.md, docs/figures/mamba.png

Should show: on selective copying (configs/selective_copy_tiny.py: 4 data tokens among 28 noise
tokens, vocabulary 16, T = 32; a 2-layer Mamba of width 64, state 16), the selective model's final
eval accuracy near 1 and the LTI ablation's (`model.ssm_selective=false`: Δ, B, C learned
parameters, not functions of the input; same block, conv and gate) lower; on induction heads
(configs/induction_tiny.py: vocabulary 16, trained at T = 32), the selective model's accuracy at
the training length and at 2x, 4x, ..., 64x that length (benchmarks/eval_lengths.py as an
after-run, 256 val sequences per length). The verdict follows the rule in `verdict` below, fixed
before the sweep (after the tuning runs that chose the configs, whose figures the two config files
give). At this length the LTI ablation learned selective copying too in the tuning run (0.74 at
step 600, against 0.88 for the selective model), so "far above" may well come out "direction
holds" here; it is reported as it comes out.

Result (the sweep of 2026-12-07, "not reproduced" by the rule): learning is bimodal over seeds at
this size and lr. Selective copying: the selective model solved it on seed 0 (0.985) and stayed at
chance on seed 1 (0.084); the LTI ablation learned on both (0.865, 0.937). Induction: seed 0 at 1.0
at every length to 64x, seed 1 at chance. Follow-up runs outside the row (same configs, not in the
table): selective copying seeds 2, 3 -> 0.066, 1.0; seed 1 with 2000 steps still 0.066; induction
seeds 2, 3 -> 1.0 at 1x and 8x, 0.75 and 0.97 at 64x; seed 1 with 1000 steps 0.76 (1x), 0.81 (64x).

Scale: the paper copies 16 tokens among 4096 and trains induction at 256 (evaluated to 2^20);
here T = 32 for both, the lengths at which the selective model learned each task within the
budget (T = 64 stayed at chance for 1000 steps of selective copying at batch 16, and for 600
steps of induction at batch 32: the configs' docstrings).
Budget: 6 runs, ~34 min on the 2-core box at load ~9 (BUDGET below, from the tuning runs' wall
times); `--dry-run` prints the plan and the estimate.
Accelerator version: the paper's lengths with the same 2-layer width-64 model:
configs/selective_copy_tiny.py with data.seq_len=4096 data.num_tokens=16 model.max_len=4096
model.ssm_chunk=64 (selective and LTI, 400K steps in the paper) and configs/induction_tiny.py with
data.seq_len=256 model.max_len=256 model.ssm_chunk=64, eval_lengths.py up to 2^20.
"""
from benchmarks.claims import AfterRun, Compare, Curves, Figure, Row, Stat, Sweep, Variant, Verdict

COPY = "configs/selective_copy_tiny.py"      # 1000 steps of 32 x 32 tokens, lr 1e-2
INDUCTION = "configs/induction_tiny.py"      # 400 steps of 64 x 32 tokens, lr 1e-2
TRAIN_T = 32                                 # induction_tiny.py's data.seq_len
LENGTHS = (32, 64, 128, 256, 512, 1024, 2048)   # 1x .. 64x the training length
LEN = AfterRun("lengths", ("benchmarks/eval_lengths.py", "--lengths", *map(str, LENGTHS),
                           "--batches", "4"), est_s=60.0)
# Speeds, measured 2026-12-07 by the tuning runs on the 2-core box shared with other jobs (load
# ~9-11), wall time over the whole run with its evals: selective copy 1000 steps in 231 s (4.3
# steps/s); its LTI ablation 2.2 steps/s (600 steps in ~270 s: the scan runs over E*N = 2048
# scalar channels); induction 600 steps in 209 s (2.9 steps/s). ~20-40 s start-up and compile per
# process; eval_lengths.py at 32..1024 took 43 s.
COPY_SPS, LTI_SPS, IND_SPS = 4.3, 2.2, 2.9
BUDGET = ("6 runs: 2 x 1000 steps of selective copying at ~4.3 steps/s, 2 x 1000 of its LTI "
          "ablation at ~2.2 steps/s, 2 x 400 of induction at ~2.9 steps/s, + ~40 s each, and 2 "
          "eval_lengths.py calls of ~60 s: ~34 min on the 2-core box at load ~9")

SOLVED = 0.9        # "solves": mean final eval accuracy at least this
FAR = 0.2           # "far above": the paper's +43 points (99.8% vs 56.4%, the Mamba block with an
#                     S4 layer, Table 1) within about a factor of 2
EXTRAPOLATE_TO = 8  # the lengths up to 8x the training length must all be solved


def diff(m, a: str, b: str, figure: str) -> Stat:
  """a - b in `figure`, per seed both have (same seed, same data order)."""
  va, vb = m.values.get(a, {}).get(figure, {}), m.values.get(b, {}).get(figure, {})
  return Stat(tuple(va[s] - vb[s] for s in sorted(set(va) & set(vb))))


def verdict(m) -> Verdict:
  """solves: the selective model's mean final eval accuracy on selective copying >= 0.9. far
  above: its accuracy minus the LTI ablation's (per seed, then the mean) >= 0.2 (the paper's +43
  points within a factor of ~2) and beyond the seed spread (mean - std > 0). extrapolates: the
  induction model's mean accuracy >= 0.9 at the training length and at every evaluated length up
  to 8x it (longer lengths reported, not required). reproduced: all three. direction holds: the
  selective model above the LTI beyond the seed spread on selective copying and the induction
  accuracy >= 0.9 at the training length and at 2x. not reproduced: otherwise."""
  sel, lti = m.stat("copy_selective", "acc"), m.stat("copy_lti", "acc")
  gap = diff(m, "copy_selective", "copy_lti", "acc")
  at = {t: m.stat("induction", f"len@{t}").mean for t in LENGTHS}
  solves = sel.mean >= SOLVED
  above = gap.mean - gap.spread > 0
  far = above and gap.mean >= FAR
  need = [t for t in LENGTHS if t <= EXTRAPOLATE_TO * TRAIN_T]
  extrapolates = all(at[t] >= SOLVED for t in need)
  two_x = all(at[t] >= SOLVED for t in LENGTHS if t <= 2 * TRAIN_T)
  longest = max((t for t in LENGTHS if all(at[u] >= SOLVED for u in LENGTHS if u <= t)),
                default=None)
  seeds = lambda st: "/".join(f"{x:.3f}" for x in st.values)
  why = (f"selective copying: selective {sel.mean:.3f} ± {sel.spread:.3f} (per seed "
         f"{seeds(sel)}), LTI {lti.mean:.3f} ± {lti.spread:.3f} (per seed {seeds(lti)}) final "
         f"eval accuracy (selective - LTI {gap.mean:+.3f} ± "
         f"{gap.spread:.3f}: {'far above' if far else 'above beyond the seed spread' if above else 'not above beyond the seed spread'}); "
         f"induction trained at T = {TRAIN_T}: accuracy "
         + ", ".join(f"{at[t]:.3f} at {t // TRAIN_T}x" for t in LENGTHS)
         + (f" (>= {SOLVED} up to {longest // TRAIN_T}x)" if longest else f" (below {SOLVED} at 1x)")
         + "; per seed at 1x / 64x: " + ", ".join(
             f"{a:.3f} / {b:.3f}" for a, b in zip(m.stat("induction", f"len@{LENGTHS[0]}").values,
                                                  m.stat("induction", f"len@{LENGTHS[-1]}").values)))
  if solves and far and extrapolates:
    return Verdict("reproduced", why)
  if above and two_x:
    return Verdict("direction holds", why)
  return Verdict("not reproduced", why)


ROW = Row(
    name="mamba",
    title="Mamba: selective copying and induction heads",
    claim=("The selective SSM (Δ, B, C functions of the input) solves the selective copying task, "
           "far above an LTI ablation of the same block (Δ, B, C fixed parameters: 99.8% vs 56.4% "
           "in the paper); and a selective model trained on induction heads at one length solves "
           "the task at much longer lengths at evaluation (trained at 256, perfect to 2^20)."),
    citation=("A. Gu and T. Dao, *Mamba: Linear-Time Sequence Modeling with Selective State "
              "Spaces*, arXiv:2312.00752 (2023), §4.1 (Tables 1 and 2)"),
    variants=(
        Variant("copy_selective", COPY, (), label="selective copying, selective (S6)",
                steps_per_sec=COPY_SPS),
        Variant("copy_lti", COPY, ("model.ssm_selective=false",),
                label="selective copying, LTI ablation", steps_per_sec=LTI_SPS),
        Variant("induction", INDUCTION, (), label="induction heads, selective (S6)",
                after=(LEN,), steps_per_sec=IND_SPS),
    ),
    seeds=2,
    figures={
        "acc": Figure("eval_accuracy", label="final eval accuracy"),
        "seq_acc": Figure("eval_seq_accuracy", label="final: all answers right"),
        "acc@400": Figure("eval_accuracy", step=400, label="eval accuracy @400"),
        **{f"len@{t}": Figure(after="lengths", path=("lengths", str(t), "eval_accuracy"),
                              label=f"accuracy at T = {t} ({t // TRAIN_T}x)")
           for t in LENGTHS},
    },
    headline=(    # relative to the LTI (whose accuracy stayed away from 0 in tuning), per seed
        Compare("selective copying: selective vs LTI, final accuracy (relative)", "copy_selective",
                "copy_lti", "acc"),
    ),
    verdict=verdict,
    panels=(
        Curves("selective copying: eval accuracy", ("copy_selective", "copy_lti"),
               "eval_accuracy"),
        Curves("selective copying: train loss", ("copy_selective", "copy_lti"), "loss"),
        Curves(f"induction heads (T = {TRAIN_T}): eval accuracy", ("induction",),
               "eval_accuracy"),
        Sweep(f"induction heads trained at T = {TRAIN_T}: accuracy at eval length", ("induction",),
              LENGTHS, tuple(f"len@{t}" for t in LENGTHS), xlabel="eval sequence length T",
              ylabel="eval accuracy", xlog=True),
    ),
    accelerator=("the paper's lengths with the same 2-layer width-64 model: `configs/"
                 "selective_copy_tiny.py` with `data.seq_len=4096 data.num_tokens=16 "
                 "model.max_len=4096 model.ssm_chunk=64` (selective and "
                 "`model.ssm_selective=false`), `configs/induction_tiny.py` with "
                 "`data.seq_len=256 model.max_len=256 model.ssm_chunk=64` and "
                 "`benchmarks/eval_lengths.py --lengths 256 ... 1048576`"),
    budget=BUDGET,
    startup_s=40.0,
)
