"""Reproduce: σReparam prevents attention entropy collapse at a high learning rate without warmup.

    python benchmarks/reproduce.py configs/repro_sigma_reparam.py   # the sweep: 2 variants x 2 seeds
    python benchmarks/results.py                                    # docs/RESULTS.md, docs/figures/sigma_reparam.png

Should show: per-head attention entropy (`train.log_attn_entropy`) of configs/sigma_reparam_tiny.py
(2 layers, 4 heads, lr 1e-2, no warmup) falling below 0.1 nats in some heads of the baseline,
with loss spikes or skipped non-finite updates, and staying up with `model.sigma_reparam=true`,
whose final eval loss is then the lower. A tiny model may not collapse at all: then the claim's
premise is not met and the verdict says so.
Budget: measured at 72b1e7a on the 2-core box: 39-45 s per run (300 steps, ~10 steps/s, and
start-up), the whole sweep ~3 min.
Accelerator version: the paper's ViT-B / 12-layer LM settings: `model.d_model=768
model.n_layers=12 model.n_heads=12 model.d_ff=3072 data.path=<corpus>`, the same two variants.
"""
from benchmarks.claims import Compare, Curves, Figure, Row, Variant, Verdict

CFG = "configs/sigma_reparam_tiny.py"
STEPS, SPS, L, H = 300, 10.0, 2, 4
BUDGET = (f"4 runs of {STEPS} steps at ~{SPS:.0f} steps/s + ~15 s each: ~3 min on the 2-core box "
          "(measured at 72b1e7a: 39-45 s per run)")
COLLAPSED = 0.1


def lowest(m, name) -> float:
  return min(m.mean(name, f"ent_{l}_{h}") for l in range(L) for h in range(H))


def verdict(m) -> Verdict:
  """lowest = the smallest head entropy at the end (mean over seeds, nats). The premise: the
  baseline collapses (lowest < 0.1). reproduced: the premise, σReparam's lowest >= 0.1 and its
  final eval loss below the baseline's. direction holds: σReparam's lowest entropy above the
  baseline's and its loss no worse. not reproduced: otherwise (a baseline that did not collapse
  included, said in the reason)."""
  base, sr = lowest(m, "baseline"), lowest(m, "sigma_reparam")
  loss = m.rel("sigma_reparam", "baseline")
  why = (f"lowest head entropy at the end: baseline {base:.3f}, σReparam {sr:.3f} nats (collapse: "
         f"< {COLLAPSED}); σReparam vs baseline loss {loss.mean:+.1%}; skipped updates "
         f"{m.mean('baseline', 'skipped'):.0f} / {m.mean('sigma_reparam', 'skipped'):.0f}")
  if base < COLLAPSED and sr >= COLLAPSED and loss.mean < 0:
    return Verdict("reproduced", why)
  if sr > base and loss.mean <= 0:
    return Verdict("direction holds", why)
  return Verdict("not reproduced", why + ("" if base < COLLAPSED else "; the baseline did not collapse"))


ROW = Row(
    name="sigma_reparam",
    title="σReparam (attention entropy collapse)",
    claim=("Attention entropy collapse (heads putting all their weight on one key) accompanies "
           "unstable training; reparametrising every linear layer as W_hat = γ/σ(W)·W, σ the "
           "spectral norm, prevents the collapse and lets training converge at learning rates "
           "where the baseline fails."),
    citation=("S. Zhai et al., *Stabilizing Transformer Training by Preventing Attention Entropy "
              "Collapse*, ICML 2023, arXiv:2303.06296"),
    variants=(Variant("baseline", CFG, (), label="baseline", steps_per_sec=SPS),
              Variant("sigma_reparam", CFG, ("model.sigma_reparam=true",), label="σReparam",
                      steps_per_sec=SPS)),
    seeds=2,
    overrides=(f"train.steps={STEPS}",),
    figures={
        "eval_loss": Figure("eval_loss", label="final eval loss"),
        "skipped": Figure("skipped_total", label="updates skipped"),
        **{f"ent_{l}_{h}": Figure(f"attn_entropy/{l}/{h}", label=f"entropy L{l}H{h}")
           for l in range(L) for h in range(H)},
    },
    headline=(Compare("σReparam vs baseline", "sigma_reparam", "baseline"),),
    verdict=verdict,
    panels=(Curves("entropy, layer 0 head 0", ("baseline", "sigma_reparam"), "attn_entropy/0/0"),
            Curves(f"entropy, layer {L - 1} head 0", ("baseline", "sigma_reparam"),
                   f"attn_entropy/{L - 1}/0"),
            Curves("train loss", ("baseline", "sigma_reparam"), "loss"),
            Curves("eval loss", ("baseline", "sigma_reparam"))),
    accelerator=("`configs/sigma_reparam_tiny.py` with `model.d_model=768 model.n_layers=12 "
                 "model.n_heads=12 model.d_ff=3072 data.path=<corpus>`"),
    budget=BUDGET,
    startup_s=15.0,
)
