"""Reproduce: a trained Pre-LN transformer converts to Pre-RMSNorm and to Pre-CRMSNorm with the same
outputs, and the RMSNorm forms are no slower to train.

    python benchmarks/reproduce.py configs/repro_pre_crmsnorm.py   # 2 x 2 quickstart runs + conversions
    python benchmarks/results.py                                   # docs/RESULTS.md, docs/figures/pre_crmsnorm.png

Should show: for each trained configs/quickstart.py run (GPT-2 style: LayerNorm, learned
positions, tied head) `benchmarks/norm_equivalence.py` (the after-run) converts the checkpoint
LN -> RMSNorm -> CRMSNorm (interop/norm_convert.py; `export.py --to-norm` writes such a run) and
finds the logits on 4 validation batches equal to the Pre-LN model's within 1e-5 in float32, with
the same eval loss; and 200 training steps of each, interleaved on this machine: RMSNorm's no
slower than LayerNorm's, the norm alone faster. Beside it, a Pre-CRMSNorm model trained from
scratch (`python train.py --config configs/quickstart.py model.norm=crmsnorm`: the same function
class, tied head) ends near Pre-LN's loss.
Budget: measured at a60659e on the 2-core box with the test suite beside it: a Pre-LN run with
its conversion and 3 x 200 timed steps ~9 min, a CRMSNorm run ~3.3 min; the sweep ~25 min. Accelerator version: the same
conversion of any pre-LN decoder run, e.g. `configs/quickstart.py` with `model.d_model=1024
model.n_layers=24 model.n_heads=16 model.d_ff=4096 data.path=<corpus>`: the CRMSNorm stream
saves 1/d of the residual-stream memory, and the norm's share of a step is larger on accelerators.
"""
from benchmarks.claims import AfterRun, Compare, Curves, Figure, Row, Sweep, Variant, Verdict

STEPS, SPS = 400, 2.5
EQUIV = AfterRun("equiv", ("benchmarks/norm_equivalence.py", "--repeats", "200"), est_s=330.0)
BUDGET = (f"4 runs of {STEPS} steps at ~{SPS} steps/s + ~30 s each, 2 conversions with 200 timed "
          "steps of each form, ~5.5 min each: ~25 min on the 2-core box (measured at a60659e, "
          "tests beside it)")
FORMS = (("ln", "layernorm"), ("rms", "rmsnorm"), ("crms", "crmsnorm"))
TOL = 1e-5


def verdict(m) -> Verdict:
  """A: in every run the logits of both converted models are within 1e-5 (max absolute
  difference, float32) of the Pre-LN model's. B: RMSNorm's training step is no slower than
  LayerNorm's: step-time ratio at most 1.02 (the interleaved medians' noise on this box) on the
  mean over runs. reproduced: A and B. direction holds: A, and RMSNorm's norm alone faster.
  not reproduced: otherwise. CRMSNorm's times are reported beside."""
  worst = max(max(m.stat("pre_ln", f"{k}_diff").values) for k in ("rms", "crms"))
  a = worst <= TOL
  step, alone = m.mean("pre_ln", "rms_step"), m.mean("pre_ln", "rms_norm")
  why = (f"max |logit difference| {worst:.1e} (RMSNorm {m.mean('pre_ln', 'rms_diff'):.1e}, "
         f"CRMSNorm {m.mean('pre_ln', 'crms_diff'):.1e} on the mean); step time vs Pre-LN: "
         f"RMSNorm x{step:.3f}, CRMSNorm x{m.mean('pre_ln', 'crms_step'):.3f}; the norm alone: "
         f"RMSNorm x{alone:.2f}, CRMSNorm x{m.mean('pre_ln', 'crms_norm'):.2f}")
  if a and step <= 1.02:
    return Verdict("reproduced", why)
  return Verdict("direction holds" if a and alone < 1 else "not reproduced", why)


def after(form: str, key: str, label: str, **kw) -> Figure:
  return Figure(after="equiv", path=(form, key), label=label, **kw)


ROW = Row(
    name="pre_crmsnorm",
    title="Pre-RMSNorm and Pre-CRMSNorm",
    claim=("Pre-LN, Pre-RMSNorm and Pre-CRMSNorm transformers are equivalent: a Pre-LN model whose "
           "residual stream is made zero-mean computes the same function with RMSNorm, and with "
           "CRMSNorm on the stream compressed to d - 1 coordinates; the RMSNorm forms train "
           "faster (the paper: 1-10% less training and inference time)."),
    citation=("Z. Jiang et al., *Pre-RMSNorm and Pre-CRMSNorm Transformers: Equivalent and "
              "Efficient Pre-LN Transformers*, NeurIPS 2023, arXiv:2305.14858"),
    variants=(Variant("pre_ln", "configs/quickstart.py", label="Pre-LN (quickstart)",
                      after=(EQUIV,), steps_per_sec=SPS),
              Variant("crms", "configs/quickstart.py", ("model.norm=crmsnorm",),
                      label="Pre-CRMSNorm, trained from scratch", steps_per_sec=SPS)),
    seeds=2,
    overrides=(f"train.steps={STEPS}",),
    figures={
        "eval_loss": Figure("eval_loss", label="final eval loss"),
        **{f"{k}_diff": after(f, "max_abs_diff", f"max abs logit diff, {f}")
           for k, f in FORMS[1:]},
        **{f"{k}_step": after(f, "step_ratio", f"step time / Pre-LN, {f}", table=k != "ln")
           for k, f in FORMS},
        **{f"{k}_norm": after(f, "norm_ratio", f"norm alone / LN, {f}", table=k != "ln")
           for k, f in FORMS},
    },
    headline=(Compare("Pre-CRMSNorm from scratch vs Pre-LN, loss", "crms", "pre_ln"),),
    verdict=verdict,
    panels=(Curves("eval loss", ("pre_ln", "crms")),
            Sweep("time relative to Pre-LN (1 = LN, 2 = RMSNorm, 3 = CRMSNorm)", ("pre_ln",),
                  (1, 2, 3), tuple(f"{k}_step" for k, _ in FORMS), xlabel="form",
                  ylabel="training step time / Pre-LN's",
                  refs=(("the norm alone", tuple(f"{k}_norm" for k, _ in FORMS)),)),),
    accelerator=("the conversion of any pre-LN decoder run: `configs/quickstart.py` with "
                 "`model.d_model=1024 model.n_layers=24 model.n_heads=16 model.d_ff=4096 "
                 "data.path=<corpus>`"),
    budget=BUDGET,
    startup_s=30.0,
)
