"""Reproduce: a ReLU transformer's FFN activations become sparse in training, more so when wider,
and keeping only the top-k costs little.

    python benchmarks/reproduce.py configs/repro_lazy_neuron.py   # the sweep: 3 variants x 2 seeds
    python benchmarks/results.py                                  # docs/RESULTS.md, docs/figures/lazy_neuron.png

Should show: the fraction of non-zero FFN activations per layer (`train.log_act_nonzero`) of the
ReLU model of configs/ffn_tiny.py falling from about one half at step 10 to well below it at the
end, lower at FFN width 1024 than 512, and Top-k ReLU (k = 32 of 512) within about 2% of ReLU's
loss. Budget: measured at cf2707b on the 2-core box: ReLU ~65 s per run, the wide FFN ~89 s,
Top-k ~196 s (lax.top_k over 512 units is slow on CPU); the sweep ~12 min. Accelerator version: T5-base-sized
decoders on a real corpus (`model.d_model=768 model.n_layers=12 model.n_heads=12 model.d_ff=3072`,
`data.path=<corpus>`), the same variants with k = 128.
"""
from benchmarks.claims import Compare, Curves, Figure, Row, Sweep, Variant, Verdict

CFG = "configs/ffn_tiny.py"
STEPS, SPS, L = 400, 8.0, 4
BUDGET = (f"6 runs of {STEPS} steps at ~{SPS:.0f} steps/s (the wide FFN ~6, Top-k ~2.4) + ~15 s "
          "each: ~12 min on the 2-core box (measured at cf2707b)")


def nonzero(m, name, fig="nz") -> float:
  return sum(m.mean(name, f"{fig}_{i}") for i in range(L)) / L


def verdict(m) -> Verdict:
  """nz = the fraction of non-zero activations averaged over layers. A: ReLU's final nz < 0.5 and
  below its nz at step 10. B: the width-1024 ReLU's final nz below the width-512 one's. C: Top-k
  (k = 32) final eval loss at most 2% above ReLU's (per-seed mean). reproduced: A, B and C.
  direction holds: A and one of B, C. not reproduced: otherwise."""
  start, end, wide = nonzero(m, "relu", "nz10"), nonzero(m, "relu"), nonzero(m, "relu_wide")
  topk = m.rel("topk", "relu")
  a, b, c = end < 0.5 and end < start, wide < end, topk.mean <= 0.02
  why = (f"ReLU non-zero fraction {start:.2f} at step 10 -> {end:.2f} at the end; width 1024: "
         f"{wide:.2f}; Top-32 vs ReLU loss {topk.mean:+.1%} ± {topk.spread:.1%}")
  if a and b and c:
    return Verdict("reproduced", why)
  return Verdict("direction holds" if a and (b or c) else "not reproduced", why)


ROW = Row(
    name="lazy_neuron",
    title="Lazy Neuron (activation sparsity)",
    claim=("In trained transformers with ReLU FFNs only a small fraction of the FFN activations "
           "is non-zero; the fraction falls during training and is smaller for wider FFNs, and "
           "enforcing it with Top-k ReLU costs little."),
    citation=("Z. Li et al., *The Lazy Neuron Phenomenon: On Emergence of Activation Sparsity in "
              "Transformers*, ICLR 2023, arXiv:2210.06313"),
    variants=(
        Variant("relu", CFG, ("model.mlp=relu",), label="ReLU, F=512", steps_per_sec=SPS),
        Variant("relu_wide", CFG, ("model.mlp=relu", "model.d_ff=1024"), label="ReLU, F=1024",
                steps_per_sec=6.0),
        Variant("topk", CFG, ("model.mlp=relu", "model.mlp_topk=32"), label="Top-32 ReLU, F=512",
                steps_per_sec=2.4),
    ),
    seeds=2,
    overrides=(f"train.steps={STEPS}",),
    figures={
        "eval_loss": Figure("eval_loss", label="final eval loss"),
        **{f"nz10_{i}": Figure(f"act_nonzero/{i}", step=10, label=f"non-zero @10, layer {i}")
           for i in range(L)},
        **{f"nz_{i}": Figure(f"act_nonzero/{i}", label=f"non-zero, layer {i}") for i in range(L)},
    },
    headline=(Compare("Top-32 vs ReLU", "topk", "relu"),
              Compare("ReLU F=1024 vs F=512", "relu_wide", "relu")),
    verdict=verdict,
    panels=(Curves("non-zero fraction, layer 0", ("relu", "relu_wide", "topk"), "act_nonzero/0"),
            Curves(f"non-zero fraction, layer {L - 1}", ("relu", "relu_wide", "topk"),
                   f"act_nonzero/{L - 1}"),
            Sweep("non-zero fraction by layer (end)", ("relu", "relu_wide", "topk"),
                  tuple(range(L)), tuple(f"nz_{i}" for i in range(L)), xlabel="layer",
                  ylabel="fraction non-zero"),
            Curves("eval loss", ("relu", "relu_wide", "topk"))),
    accelerator=("`configs/ffn_tiny.py` with `model.d_model=768 model.n_layers=12 model.n_heads=12 "
                 "model.d_ff=3072 data.path=<corpus>`, Top-k at k = 128"),
    budget=BUDGET,
    startup_s=15.0,
)
