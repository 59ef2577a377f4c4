"""The train state, optimizer, loss, train step and eval step: train.py runs them, eval.py
evaluates with the same loss, training/aot.py (--aot) compiles them.

`jit_train_step` is THE step: the loop runs it and `--aot` compiles it, with the same shardings,
donation and batch spec, so what is compiled ahead of time is what runs. `loss_sums` is THE loss:
the train step's objective and the eval step's (which may scale the attention logits): token
cross-entropy, or the squared error of a real-valued read-out (in-context regression). On a token
task (data/tasks.py) both steps also sum accuracy over the answer positions, and the train
step's metrics gain `accuracy` and `seq_accuracy`; other sources compute none of it. The
train.log_* flags add per-layer statistics the layers sow (layers/stats.py) as "<name>/<layer>".
"""
from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import base
from layers import sharding, sigma_reparam
from modelzoo import common
from training.checkpoint import abstract_like


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  buffers: dict                  # the model's untrained variables (common.BUFFERS), or {}
  opt_state: optax.OptState
  rng: jax.Array
  bad_steps: jax.Array           # consecutive non-finite updates skipped
  skipped: jax.Array             # all non-finite updates skipped so far


def make_schedule(t: base.TrainConfig):
  decay_steps = max(t.steps - t.warmup_steps, 1)
  warm = optax.linear_schedule(0.0, t.lr, max(t.warmup_steps, 1))
  if t.schedule == "cosine":
    decay = optax.cosine_decay_schedule(t.lr, decay_steps, alpha=t.min_lr / t.lr)
  elif t.schedule == "linear":
    decay = optax.linear_schedule(t.lr, t.min_lr, decay_steps)
  else:
    decay = optax.constant_schedule(t.lr)
  return optax.join_schedules([warm, decay], [t.warmup_steps])


def decay_mask(params):
  """Weight decay on matmul weights and embeddings only (not biases, norms), like nanoGPT."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {k: k[-1] in ("kernel", "embedding") for k in flat})


def make_optimizer(t: base.TrainConfig):
  schedule = make_schedule(t)
  adamw = optax.adamw(schedule, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay,
                      mask=decay_mask)
  tx = optax.chain(optax.clip_by_global_norm(t.clip_norm), adamw) if t.clip_norm else adamw
  return tx, schedule


# train.log_<flag> -> the statistics the layers sow under these names (layers/stats.py)
STATS = {"hidden_rms": ("hidden_rms",), "act_nonzero": ("act_nonzero",),
         "attn_entropy": ("attn_entropy",),
         "outliers": ("ffn_maxabs", "ffn_kurtosis", "resid_maxabs", "resid_kurtosis")}
PER_HEAD = ("attn_entropy",)                # one value per head: [H] per layer


def logged_stats(t: base.TrainConfig) -> tuple[str, ...]:
  return tuple(n for flag, names in STATS.items() if getattr(t, f"log_{flag}") for n in names)


def per_layer(stats_tree, name: str) -> jax.Array:
  """The values sown as `name`, in layer order: [L] ([L, H] for PER_HEAD), from one nn.scan
  stack (leading layer axis), unrolled layers `layers_<i>`, or several stacks in path order."""
  flat = flax.traverse_util.flatten_dict(stats_tree)
  paths = sorted((p for p in flat if p[-1] == name), key=lambda p: [
      (0, int(k.rsplit("_", 1)[1]), "") if k.rsplit("_", 1)[-1].isdigit() else (1, 0, k)
      for k in p])
  if not paths:
    raise ValueError(f"the model sows no {name!r} statistic")
  ndim = 1 if name in PER_HEAD else 0
  vals = [flat[p][0] for p in paths]
  return jnp.concatenate([v if v.ndim > ndim else v[None] for v in vals])


def loss_sums(model, params, batch, z_loss: float = 0.0, pack: bool = False,
              logit_scale: float = 1.0, answers: bool = False, stats: tuple[str, ...] = (),
              buffers: dict | None = None):
  """(loss sum, z-loss sum, weight sum, extra sums) over the batch; the loss is sum / weights.

  Token inputs (int [B, T]): token cross-entropy, and the z-loss term. Real-valued inputs (float
  [B, T, d_in], model.d_in > 0: in-context regression): the squared error of the scalar read-out,
  sum w * (y_hat - y)^2, no z-loss. The inputs' dtype is static, so each program has one loss.
  answers=True (a token task) adds the sums of accuracy over the answer positions (weights > 0):
  "correct" (argmax == target, weighted), "seqs_right" (sequences with every answer right) and
  "seqs" (sequences with an answer); otherwise the extra sums are {} (nothing computed).
  logit_scale multiplies every attention logit (eval.py --logit-scale; 1 in training).
  stats: names of per-layer statistics (STATS' values) returned in extra as "stat:<name>".
  buffers: TrainState.buffers (σReparam's u, v), read, not differentiated."""
  out = model.apply({"params": params, **(buffers or {})}, batch["inputs"], batch["positions"],
                    batch["segment_ids"] if pack else None, logit_scale=logit_scale,
                    mutable=["stats"] if stats else False)
  if stats:
    out, sown = out
    stat = {f"stat:{n}": per_layer(sown["stats"], n) for n in stats}
  out = out.astype(jnp.float32)
  w_BT = batch["weights"]
  if jnp.issubdtype(batch["inputs"].dtype, jnp.floating):
    sq_BT = (out - batch["targets"]) ** 2                      # out: y_hat [B, T]
    return (sq_BT * w_BT).sum(), jnp.zeros(()), w_BT.sum(), stat if stats else {}
  logits_BTV = out
  lse_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  target_BT = jnp.take_along_axis(logits_BTV, batch["targets"][..., None], axis=-1)[..., 0]
  extra = {}
  if answers:
    hit_BT = jnp.argmax(logits_BTV, axis=-1) == batch["targets"]
    ans_BT = w_BT > 0
    has_B = ans_BT.any(-1)
    extra = {"correct": (hit_BT * w_BT).sum(),
             "seqs_right": (has_B & (hit_BT | ~ans_BT).all(-1)).sum().astype(jnp.float32),
             "seqs": has_B.sum().astype(jnp.float32)}
  if stats:
    extra.update(stat)
  return ((lse_BT - target_BT) * w_BT).sum(), z_loss * (lse_BT**2 * w_BT).sum(), w_BT.sum(), extra


def accuracies(extra: dict, w) -> dict:
  """loss_sums' extra sums -> {"accuracy", "seq_accuracy"} ({} for none)."""
  if "correct" not in extra:
    return {}
  return {"accuracy": extra["correct"] / jnp.maximum(w, 1.0),
          "seq_accuracy": extra["seqs_right"] / jnp.maximum(extra["seqs"], 1.0)}


def stat_metrics(extra: dict, n_micro: int) -> dict:
  """extra's "stat:<name>" [L] or [L, H] (summed over n_micro micro-batches) -> their means as
  {"<name>/<layer>": .} or {"<name>/<layer>/<head>": .}."""
  out = {}
  for k, v in extra.items():
    if k.startswith("stat:"):
      for idx in np.ndindex(v.shape):
        out["/".join((k[5:], *map(str, idx)))] = v[idx] / n_micro
  return out


def measures_accuracy(cfg: base.Config) -> bool:
  """Whether the steps measure accuracy: a token task (data/tasks.py; not the regression)."""
  return cfg.data.task and cfg.model.d_in == 0


def all_finite(tree) -> jax.Array:
  """Whether every floating element of `tree` is finite, without a host sync. One all() per leaf
  rather than isfinite of a sum of squares, which overflows to inf on large finite values."""
  ok = jnp.array(True)
  for x in jax.tree.leaves(tree):
    if jnp.issubdtype(x.dtype, jnp.inexact):
      ok &= jnp.isfinite(x).all()
  return ok


def make_train_step(model, tx, schedule, cfg: base.Config):
  t, A = cfg.train, cfg.train.grad_accum

  acc = measures_accuracy(cfg)
  stats = logged_stats(t)

  def objective(params, batch, buffers):
    ce, z, w, extra = loss_sums(model, params, batch, t.z_loss, cfg.data.pack, answers=acc,
                                stats=stats, buffers=buffers)
    return ce + z, (ce, w, extra)

  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def train_step(state: TrainState, batch):
    if A == 1:
      (_, (ce, w, extra)), grads = grad_fn(state.params, batch, state.buffers)
    else:
      # Micro-batch a takes rows a, a+A, ...: every device keeps an equal share of each micro-batch.
      micro = jax.tree.map(lambda x: x.reshape(-1, A, *x.shape[1:]).swapaxes(0, 1), batch)

      def accumulate(carry, mb):
        (_, sums_i), g_i = grad_fn(state.params, mb, state.buffers)
        g, sums = carry
        return (jax.tree.map(jnp.add, g, g_i), jax.tree.map(jnp.add, sums, sums_i)), None
      zeros = jax.tree.map(jnp.zeros_like, state.params)
      extra_shapes = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro),
                                   state.buffers)
      no_sums = (0.0, 0.0, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                        extra_shapes[0][1][2]))
      (grads, (ce, w, extra)), _ = jax.lax.scan(accumulate, (zeros, no_sums), micro)
    w = jnp.maximum(w, 1.0)
    grads = jax.tree.map(lambda g: g / w, grads)
    loss, grad_norm = ce / w, optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # σReparam's u, v (if any) take their power iteration on the updated kernels.
    buffers = sigma_reparam.power_iteration(params, state.buffers)
    # A non-finite loss, gradient, or updated state skips the update inside the step (no host
    # sync). The state is checked too: Adam with eps=0 turns a zero gradient into 0/0 = NaN
    # parameters while loss and gradient norm look fine.
    state_ok = all_finite((params, buffers, opt_state))
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & state_ok
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    bad = jnp.where(ok, 0, state.bad_steps + 1)
    new = TrainState(step=state.step + 1, params=keep(params, state.params),
                     buffers=keep(buffers, state.buffers),
                     opt_state=keep(opt_state, state.opt_state), rng=state.rng,
                     bad_steps=bad, skipped=state.skipped + (~ok).astype(jnp.int32))
    metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state.step),
               "skipped": 1.0 - ok.astype(jnp.float32), "skipped_total": new.skipped,
               "bad_steps": bad, "nonfinite_state": 1.0 - state_ok.astype(jnp.float32),
               **accuracies(extra, w), **stat_metrics(extra, A)}
    return new, metrics

  return train_step


def make_eval_step(model, cfg: base.Config, logit_scale: float = 1.0):
  """(params, batch, buffers=None) -> (summed loss: token NLL or squared error, summed weights,
  loss_sums' extra sums: accuracy's for a token task, else {}), attention logits x logit_scale.
  buffers: the train state's (σReparam's u, v); restored runs come folded and need none."""
  acc = measures_accuracy(cfg)

  def eval_step(params, batch, buffers=None):
    ce, _, w, extra = loss_sums(model, params, batch, 0.0, cfg.data.pack, logit_scale, answers=acc,
                                buffers=buffers)
    return ce, w, extra
  return eval_step


def init_state(model, tx, cfg: base.Config, mesh):
  """Params and optimizer state created directly with their shardings (never on one device)."""
  def init_fn(rng):
    variables = model.init(rng, common.dummy_inputs(cfg.model, cfg.data.seq_len))
    params, buffers = variables["params"], common.buffers(variables)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, buffers=buffers, opt_state=tx.init(params), rng=rng,
                      bad_steps=zero, skipped=zero)

  rng = jax.random.PRNGKey(cfg.train.seed)
  boxed = jax.eval_shape(init_fn, rng)
  shardings = sharding.shardings(boxed, mesh)
  abstract = abstract_like(nn.unbox(boxed), shardings)
  make = jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=shardings)
  return make, rng, abstract, shardings


BATCH_DTYPES = {"inputs": jnp.int32, "targets": jnp.int32, "weights": jnp.float32,
                "segment_ids": jnp.int32, "positions": jnp.int32}


def batch_dtypes(cfg: base.Config) -> dict:
  """BATCH_DTYPES, with real-valued inputs and targets for a real read-in (model.d_in > 0)."""
  if not cfg.model.d_in:
    return BATCH_DTYPES
  return {**BATCH_DTYPES, "inputs": jnp.float32, "targets": jnp.float32}


def batch_spec(cfg: base.Config, b_sh) -> dict:
  """The global batch as the compiled step sees it: [B, T] arrays split over data x fsdp
  (inputs [B, T, d_in] for a real read-in)."""
  shape_BT = (cfg.train.batch_size, cfg.data.seq_len)
  return {k: jax.ShapeDtypeStruct(shape_BT + ((cfg.model.d_in,) if k == "inputs" and cfg.model.d_in
                                              else ()), dt, sharding=b_sh)
          for k, dt in batch_dtypes(cfg).items()}


def jit_train_step(model, tx, schedule, cfg: base.Config, state_sh, b_sh):
  """The jitted step: the state is donated (updated in place), the metrics come back replicated.
  Lower it under `sharding.activate(mesh)` so the layers' logical constraints apply."""
  return jax.jit(make_train_step(model, tx, schedule, cfg), donate_argnums=(0,),
                 in_shardings=(state_sh, b_sh), out_shardings=(state_sh, None))
