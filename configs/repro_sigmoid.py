"""Reproduce: sigmoid self-attention with b = -log n matches softmax; without the bias it starts worse.

    python benchmarks/reproduce.py configs/repro_sigmoid.py        # the sweep: 3 variants x 3 seeds
    python benchmarks/results.py                                   # docs/RESULTS.md, docs/figures/sigmoid.png

Should show: three eval-loss curves of configs/sigmoid_tiny.py (4 layers, width 128, byte level,
QK-norm and hybrid-norm in all three) ending close together for softmax and sigmoid with
b = -log 128, and the sigmoid run without the bias (b = 0) above the other two over the first
evaluations. The verdict follows the rule below, decided before the runs. The one-seed 600-step
runs of docs/deltanet_sigmoid.md ended with sigmoid 7% above softmax: at this scale the parity
claim may well come out "not reproduced", and is reported so.

Runs: 600 steps of 16 x 128 bytes each (1.2M tokens), evaluated every 50 steps on 8 batches.
The bias: b = -log(model.max_len) = -log 128 by default; `model.sigmoid_bias=false` sets b = 0.
Budget: 9 runs, ~37 min on 2 cores (BUDGET below, from a 60-step timed run of sigmoid_tiny.py on
the shared 2-core box); `--dry-run` prints the plan and the estimate.
Accelerator version: configs/sigmoid_1b.py (AXLearn's gala-sigmoid-1B-2k: n = 2048, b = -7.62),
the same three variants with data.path= a real corpus and without the tiny overrides.
"""
from benchmarks.claims import Compare, Curves, Figure, Row, Variant, Verdict

CFG = "configs/sigmoid_tiny.py"
STEPS = 600         # sigmoid_tiny.py's own (docs/deltanet_sigmoid.md's one-seed runs: 600 steps)
# Measured 2026-12-07, a 60-step run of sigmoid_tiny.py on the 2-core box shared with other jobs
# (load 6-8): 2.2-3.2 steps/s over steps 20-60, 58 s wall in all (~30 s start-up, compile, eval).
SPS = 2.8
BUDGET = (f"9 runs of {STEPS} steps at ~{SPS} steps/s + ~30 s each: ~37 min on the 2-core box "
          "(measured at load 6-8)")

PARITY = 0.02       # the paper: sigmoid with b = -log n within ~1-2% of softmax
NEAR = 0.05         # "direction holds": sigmoid within 5%


def verdict(m) -> Verdict:
  """parity: |sigmoid / softmax - 1| <= 2% in final eval loss (per seed, then the mean).
  early: eval loss at step 100 of b = 0 above b = -log n by more than the seed spread
  (mean - std > 0). reproduced: both. direction holds: early holds and sigmoid is within 5% of
  softmax, or parity holds and b = 0 is above only on the mean. not reproduced: otherwise."""
  gap = m.rel("sigmoid", "softmax")
  early = m.rel("sigmoid_nobias", "sigmoid", "eval_loss@100")
  final_nb = m.rel("sigmoid_nobias", "sigmoid")
  parity = abs(gap.mean) <= PARITY
  near = gap.mean <= NEAR
  early_clear = early.mean - early.spread > 0
  early_mean = early.mean > 0
  why = (f"sigmoid vs softmax, final eval loss {gap.mean:+.1%} ± {gap.spread:.1%} "
         f"({'within' if parity else 'outside'} the {PARITY:.0%} of the claim); b = 0 vs "
         f"b = -log n at step 100 {early.mean:+.1%} ± {early.spread:.1%} "
         f"({'worse beyond the seed spread' if early_clear else 'worse on the mean only' if early_mean else 'not worse'}), "
         f"at the end {final_nb.mean:+.1%}")
  if parity and early_clear:
    return Verdict("reproduced", why)
  if (early_clear and near) or (parity and early_mean):
    return Verdict("direction holds", why)
  return Verdict("not reproduced", why)


ROW = Row(
    name="sigmoid",
    title="Sigmoid Self-Attention",
    claim=("Sigmoid attention, σ(q·k/√d + b) with the bias b = −log n (n the sequence length) and "
           "the paper's stabilisers, trains to the same loss as softmax attention (within about "
           "1–2%); without the bias (b = 0) training is worse early on, the attention's initial "
           "output norm being too large."),
    citation=("J. Ramapuram et al., *Theory, Analysis, and Best Practices for Sigmoid "
              "Self-Attention*, arXiv:2409.04431 (2024)"),
    variants=(
        Variant("softmax", CFG, ("model.attention=softmax",), label="softmax", steps_per_sec=SPS),
        Variant("sigmoid", CFG, (), label="sigmoid, b = −log 128", steps_per_sec=SPS),
        Variant("sigmoid_nobias", CFG, ("model.sigmoid_bias=false",), label="sigmoid, b = 0",
                steps_per_sec=SPS),
    ),
    seeds=3,
    overrides=(f"train.steps={STEPS}", "train.eval_every=50", "train.log_every=10"),
    figures={
        "eval_loss": Figure("eval_loss", label="final eval loss"),
        "eval_loss@50": Figure("eval_loss", step=50, label="eval loss @50"),
        "eval_loss@100": Figure("eval_loss", step=100, label="eval loss @100"),
    },
    headline=(
        Compare("sigmoid vs softmax, final", "sigmoid", "softmax"),
        Compare("b = 0 vs b = −log n, step 100", "sigmoid_nobias", "sigmoid", "eval_loss@100"),
        Compare("b = 0 vs b = −log n, final", "sigmoid_nobias", "sigmoid"),
    ),
    verdict=verdict,
    panels=(
        Curves("eval loss (nats/byte)", ("softmax", "sigmoid", "sigmoid_nobias"), "eval_loss"),
        Curves("train loss", ("softmax", "sigmoid", "sigmoid_nobias"), "loss"),
    ),
    accelerator=("`configs/sigmoid_1b.py` (n = 2048, b = −7.62) with `data.path=<corpus>`: the same "
                 "variants (`model.attention=softmax`, `model.sigmoid_bias=false`) without the "
                 "tiny row's step overrides"),
    budget=BUDGET,
    startup_s=30.0,
)
