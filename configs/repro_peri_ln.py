"""Reproduce: Peri-LN keeps the hidden state's scale flat with depth where Pre-LN lets it grow, at
a loss no worse than Pre-LN's; Post-LN without warmup fails at a high learning rate.

    python benchmarks/reproduce.py configs/repro_peri_ln.py     # the sweep: 5 variants x 2 seeds
    python benchmarks/results.py                                # docs/RESULTS.md, docs/figures/peri_ln.png

Should show: per-layer RMS of the block outputs (`train.log_hidden_rms`) at the end of training
rising with depth for pre-norm and flat for peri-norm at both learning rates; final eval loss of
peri at or below pre; post-norm at lr 1e-2 without warmup far above the others (or with skipped
non-finite updates: its runs may skip up to `train.max_bad_steps=300` updates so that they finish
and show the failure). configs/peri_ln_tiny.py: 8 layers, width 128, LayerNorm, byte level.
Budget: measured at f06d924 on the 2-core box shared with tests: 100-175 s per run (300 steps
and start-up), the sweep 25 min. Accelerator version: the same variants on a 400M-class
decoder (`model.d_model=1024 model.n_layers=24 model.n_heads=16 model.d_ff=4096`) with
data.path= a real corpus.
"""
from benchmarks.claims import Compare, Curves, Figure, Row, Sweep, Variant, Verdict

CFG = "configs/peri_ln_tiny.py"
STEPS, L = 300, 8
SPS = 2.6
BUDGET = (f"10 runs of {STEPS} steps at ~{SPS} steps/s + ~30 s each: ~25 min on the 2-core box "
          "(measured at f06d924: 100-175 s per run, with tests beside it)")
HI = ("train.lr=1e-2", "train.min_lr=1e-3")


def v(name, *over, label=""):
  return Variant(name, CFG, over, label=label, steps_per_sec=SPS)


def growth(m, name) -> float:
  return m.mean(name, f"rms_{L - 1}") / m.mean(name, "rms_0")


def verdict(m) -> Verdict:
  """growth = mean RMS of the last block's output / of the first block's, at the end. A: at both
  learning rates pre-norm's growth > 2 and peri-norm's < 1.5. B: at both learning rates peri's
  final eval loss is at most pre's (per-seed relative change, mean <= 0). C: post-norm at lr 1e-2
  without warmup ends >= 10% above pre-norm at 1e-2, or skipped non-finite updates.
  reproduced: A, B and C. direction holds: A and one of B, C. not reproduced: otherwise."""
  g = {n: growth(m, n) for n in ("pre", "peri", "pre_hi", "peri_hi")}
  a = g["pre"] > 2 and g["pre_hi"] > 2 and g["peri"] < 1.5 and g["peri_hi"] < 1.5
  lo, hi = m.rel("peri", "pre"), m.rel("peri_hi", "pre_hi")
  b = lo.mean <= 0 and hi.mean <= 0
  post = m.rel("post_hi", "pre_hi")
  c = post.mean >= 0.10 or m.mean("post_hi", "skipped") > 0
  why = (f"RMS growth last/first layer: pre {g['pre']:.2f} / {g['pre_hi']:.2f}, peri "
         f"{g['peri']:.2f} / {g['peri_hi']:.2f} (lr 3e-3 / 1e-2); peri vs pre loss {lo.mean:+.1%} / "
         f"{hi.mean:+.1%}; post-norm at 1e-2 without warmup {post.mean:+.1%} vs pre, "
         f"{m.mean('post_hi', 'skipped'):.0f} updates skipped")
  if a and b and c:
    return Verdict("reproduced", why)
  return Verdict("direction holds" if a and (b or c) else "not reproduced", why)


ROW = Row(
    name="peri_ln",
    title="Peri-LN",
    claim=("Normalising each sublayer's output as well as its input (x + Norm(F(Norm(x)))) keeps "
           "the hidden state's scale flat with depth, where Pre-LN's grows, and trains at least as "
           "well as Pre-LN; Post-LN without warmup fails at a high learning rate."),
    citation=("J. Kim et al., *Peri-LN: Revisiting Normalization Layer in the Transformer "
              "Architecture*, arXiv:2502.02732 (2025)"),
    variants=(
        v("pre", "model.norm_placement=pre", label="pre, lr 3e-3"),
        v("peri", label="peri, lr 3e-3"),
        v("pre_hi", "model.norm_placement=pre", *HI, label="pre, lr 1e-2"),
        v("peri_hi", *HI, label="peri, lr 1e-2"),
        v("post_hi", "model.norm_placement=post", *HI, "train.warmup_steps=0",
          "train.max_bad_steps=300", label="post, lr 1e-2, no warmup"),
    ),
    seeds=2,
    overrides=(f"train.steps={STEPS}",),
    figures={
        "eval_loss": Figure("eval_loss", label="final eval loss"),
        "skipped": Figure("skipped_total", label="updates skipped"),
        **{f"rms_{i}": Figure(f"hidden_rms/{i}", label=f"RMS layer {i}") for i in range(L)},
    },
    headline=(
        Compare("peri vs pre, lr 3e-3", "peri", "pre"),
        Compare("peri vs pre, lr 1e-2", "peri_hi", "pre_hi"),
        Compare("post (no warmup) vs pre, lr 1e-2", "post_hi", "pre_hi"),
    ),
    verdict=verdict,
    panels=(
        Sweep("hidden-state RMS by layer (end)", ("pre", "peri", "pre_hi", "peri_hi"),
              tuple(range(L)), tuple(f"rms_{i}" for i in range(L)), xlabel="layer",
              ylabel="RMS of the block output"),
        Curves("eval loss", ("pre", "peri", "pre_hi", "peri_hi", "post_hi")),
    ),
    accelerator=("`configs/peri_ln_tiny.py` with `model.d_model=1024 model.n_layers=24 "
                 "model.n_heads=16 model.d_ff=4096 data.path=<corpus>` and the same variants"),
    budget=BUDGET,
    startup_s=30.0,
)
