"""Pre-LN -> Pre-RMSNorm -> Pre-CRMSNorm: the same function, cheaper norms (Jiang et al. 2023).

    m2, params2 = convert(m, params, "rmsnorm")     # or "crmsnorm"; m: a pre-norm decoder config
    python export.py --workdir runs/X --to-norm crmsnorm --out runs/X-crms     # a run: train/eval it

Why it is exact. LayerNorm ignores the mean of its input, so the residual stream can be made
zero-mean without changing any norm's output: centre every row of the embedding tables and every
output column of the projections that write to the stream (attention's `out`, the MLP's `wo`, and
their biases). On a zero-mean vector LayerNorm is RMSNorm. Each norm's gamma and beta then move
into the layer that reads it (W' = diag(gamma) W, b' = b + beta W), so the norms have none (scale
1), and the head becomes untied with a bias. A zero-mean vector of width d is fixed by its first
d - 1 coordinates: CRMSNorm keeps only those (layers/norm.py), the stream writers drop their last
column, and each reader folds the dropped coordinate -sum(x) into the others: W'' = W'[:d-1] -
W'[d-1]. Everything is done in float64 and cast back to the run's parameter dtype.

Converts the decoder with pre-norm blocks (model.norm_placement=pre) and none of the options that
read the stream other than through a norm and a linear map (QK-norm reads q and k; gated attention
reads slices of x; σReparam and LayerScale rescale the maps): those are refused by name.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from configs.base import ConfigError
from interop.params_io import flatten, unflatten

STEPS = {("layernorm", "rmsnorm"), ("layernorm", "crmsnorm"), ("rmsnorm", "crmsnorm")}
READERS = {"norm1": ("attn.query", "attn.key", "attn.value"), "norm2": ("mlp.wi",)}
WRITERS = ("attn.out", "mlp.wo")
# A zero-mean stream's writers have |mean over d| at most this times their largest |entry|.
CENTRED_TOL = 1e-5


def check_convertible(m, to: str) -> None:
  """ConfigError naming what stops model config `m` from becoming a Pre-`to` model."""
  if (m.norm, to) not in STEPS:
    raise ConfigError(f"--to-norm {to}: model.norm={m.norm!r} converts layernorm -> rmsnorm -> "
                      "crmsnorm, one way only")
  if m.name != "decoder":
    raise ConfigError(f"--to-norm: model.name={m.name!r}; only the decoder converts")
  bad = {k: getattr(m, k) for k, ok in (("norm_placement", "pre"), ("qk_norm", False),
                                        ("attn_gate", False), ("sigma_reparam", False),
                                        ("layer_scale", 0.0), ("d_in", 0))
         if getattr(m, k) != ok}
  if bad:
    raise ConfigError("--to-norm converts a plain pre-norm decoder; this one has "
                      + ", ".join(f"model.{k}={v!r}" for k, v in bad.items()))


def convert(m, params, to: str):
  """(model config, parameters) of the Pre-`to` model computing the same logits as `m`, `params`."""
  check_convertible(m, to)
  given = flatten(params)
  dtype = next(iter(given.values())).dtype
  flat = {k: v.astype(np.float64) for k, v in given.items()}
  D = m.d_model
  tables = ["embed.embedding"] + (["pos.embedding"] if m.pos == "learned" else [])
  layers = split_layers(flat, m)
  # The head reads the normalised stream, not the stream: it keeps the table as it was.
  head = {"head.kernel": flat["embed.embedding"].T.copy() if m.tie_embeddings else
          flat.pop("head.kernel"), "head.bias": flat.pop("head.bias", np.zeros(m.vocab_size))}
  if m.norm == "layernorm":
    for t in tables:
      flat[t] = flat[t] - flat[t].mean(-1, keepdims=True)
    for P in layers:
      for w in WRITERS:
        P[f"{w}.kernel"] = P[f"{w}.kernel"] - P[f"{w}.kernel"].mean(-1, keepdims=True)
        b = P.get(f"{w}.bias", np.zeros(D))
        P[f"{w}.bias"] = b - b.mean()
  elif not all(centred(a) for a in [flat[t] for t in tables] +
               [P[f"{w}.kernel"] for P in layers for w in WRITERS]):
    raise ConfigError("--to-norm crmsnorm: this RMSNorm model's residual stream is not zero-mean "
                      "(its embeddings or output projections are not centred): only a Pre-LN model "
                      "converted to RMSNorm compresses exactly")
  for P in layers:
    for n, readers in READERS.items():
      fold(P, n, readers)
  for k in ("norm_f.scale", "norm_f.bias"):
    if k in flat:
      head[k] = flat.pop(k)
  fold(head, "norm_f", ("head",))
  flat.update(head)
  if to == "crmsnorm":
    for t in tables:
      flat[t] = flat[t][:, :D - 1]
    for P in layers:
      for w in WRITERS:
        P[f"{w}.kernel"], P[f"{w}.bias"] = P[f"{w}.kernel"][..., :D - 1], P[f"{w}.bias"][:D - 1]
      for n, readers in READERS.items():
        compress(P, n, readers)
    compress(flat, "norm_f", ("head",))
  flat.update(join_layers(layers, m))
  m2 = dataclasses.replace(m, norm=to, norm_bias=False, use_bias=True, tie_embeddings=False,
                           head_bias=True)
  return m2, unflatten({k: v.astype(dtype) for k, v in flat.items()})


def centred(w) -> bool:
  return bool(np.abs(w.mean(-1)).max() <= CENTRED_TOL * max(np.abs(w).max(), 1e-30))


def fold(P: dict, norm: str, readers) -> None:
  """gamma, beta of `norm` into each reader (input axis first): W' = diag(gamma) W, b' = b + beta W;
  the norm is left with scale 1 and no bias."""
  g, b = P[f"{norm}.scale"], P.pop(f"{norm}.bias", None)
  for r in readers:
    W = P[f"{r}.kernel"]
    bias = P.get(f"{r}.bias", np.zeros(W.shape[1:]))
    if b is not None:
      bias = bias + np.tensordot(b, W, axes=(0, 0))
    P[f"{r}.kernel"], P[f"{r}.bias"] = W * g.reshape(-1, *[1] * (W.ndim - 1)), bias
  P[f"{norm}.scale"] = np.ones_like(g)


def compress(P: dict, norm: str, readers) -> None:
  """Readers of a compressed stream: x_d = -sum(x[:d-1]) folded in, W'' = W[:d-1] - W[d-1]."""
  for r in readers:
    W = P[f"{r}.kernel"]
    P[f"{r}.kernel"] = W[:-1] - W[-1:]
  P[f"{norm}.scale"] = P[f"{norm}.scale"][:-1]


def split_layers(flat: dict, m) -> list[dict]:
  """Each layer's tensors by their in-layer name (`attn.query.kernel`), taken out of `flat`.
  A scanned stack's tensors are cut along their leading layer axis."""
  out = [dict() for _ in range(m.n_layers)]
  for k in [k for k in flat if k.startswith("layers")]:
    head, rest = k.split(".", 1)
    v = flat.pop(k)
    if head == "layers":
      for i in range(m.n_layers):
        out[i][rest] = v[i]
    else:
      out[int(head.split("_")[1])][rest] = v
  return out


def join_layers(layers: list[dict], m) -> dict:
  if m.scan_layers:
    return {f"layers.{k}": np.stack([P[k] for P in layers]) for k in layers[0]}
  return {f"layers_{i}.{k}": v for i, P in enumerate(layers) for k, v in P.items()}
