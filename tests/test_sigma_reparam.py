"""σReparam (layers/sigma_reparam.py): sigma(W) against jnp.linalg.norm(W, 2), the reparametrised
layer against its formula, and the train step: u, v move only by the power iteration."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from layers import sigma_reparam as sr
from layers.dense import Dense
from tests.test_step import run

X = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 6))


def test_layer_is_gamma_over_sigma_times_w_with_sigma_exact_at_init():
  d = Dense((5,), ("heads", "kv", "embed"), n_in=2, sigma_reparam=True)   # a 2-axis fan-in
  p = nn.unbox(d.init(jax.random.PRNGKey(1), X)["params"])
  w = np.asarray(p["kernel"]).reshape(24, 5)
  s = np.linalg.norm(w, 2)
  np.testing.assert_allclose(sr.sigma(jnp.asarray(w), p[sr.U].reshape(-1), p[sr.V]), s, rtol=1e-5)
  assert p[sr.U].shape == (4, 6) and p[sr.V].shape == (5,) and float(p[sr.GAMMA]) == 1.0
  p = dict(p, sigma_gamma=jnp.array(2.5))
  want = np.asarray(X).reshape(6, 24) @ (2.5 / s * w) + np.asarray(p["bias"])
  np.testing.assert_allclose(d.apply({"params": p}, X).reshape(6, 5), want, atol=1e-5)
  g = jax.grad(lambda q: d.apply({"params": q}, X).sum())(p)    # u, v are not trained
  assert not np.asarray(g[sr.U]).any() and not np.asarray(g[sr.V]).any()
  assert np.asarray(g["kernel"]).any() and float(g[sr.GAMMA]) != 0.0


def test_power_iteration_converges_to_the_spectral_norm_on_stacked_layers():
  w = jax.random.normal(jax.random.PRNGKey(2), (3, 8, 2, 5))      # 3 layers of [8] -> [2, 5]
  tree = {"l": {"kernel": w, sr.U: jnp.ones((3, 8)), sr.V: jnp.ones((3, 2, 5))}}
  for _ in range(60):
    tree = sr.power_iteration(tree)
  for i in range(3):
    wi = w[i].reshape(8, 10)
    got = sr.sigma(wi, tree["l"][sr.U][i], tree["l"][sr.V][i].reshape(-1))
    np.testing.assert_allclose(got, jnp.linalg.norm(wi, 2), rtol=1e-4)
  np.testing.assert_array_equal(tree["l"]["kernel"], w)


def test_train_step_moves_u_v_only_by_one_power_iteration():
  _, p0 = run(["model.sigma_reparam=true"], steps=0)
  _, p1 = run(["model.sigma_reparam=true"], steps=1)
  f0, f1 = (flax.traverse_util.flatten_dict(p) for p in (p0, p1))
  us = [k for k in f0 if k[-1] == sr.U]
  assert sorted(k[-2] for k in us) == ["key", "out", "query", "value", "wi", "wo"]   # scanned
  for k in us:
    w1, u0 = f1[k[:-1] + ("kernel",)], f0[k]
    lead = u0.ndim + f0[k[:-1] + (sr.V,)].ndim - w1.ndim
    want = sr.power_iteration({"a": {"kernel": w1, sr.U: u0, sr.V: f0[k[:-1] + (sr.V,)]}})["a"]
    np.testing.assert_allclose(f1[k], want[sr.U], atol=1e-6)
    assert lead == 1 and not np.array_equal(f1[k], u0)   # exact at init, W moved a little


def test_u_v_checkpoint_and_resume_bitwise(tmp_path, corpus, capsys):
  """u and v are state the run carries: a σReparam run resumed from its step-5 checkpoint ends
  at step 10 with the same parameters, u and v included, bit for bit, as one that never stopped."""
  import shutil
  from tests.test_train import TINY, final_params
  import entry
  argv = ["--config", "configs/quickstart.py", *TINY, "data.source=text", f"data.path={corpus}",
          "model.sigma_reparam=true", "train.steps=10", "ckpt.every=5", "ckpt.keep=10"]
  ref, resumed = tmp_path / "ref", tmp_path / "resumed"
  assert entry.train([*argv, "--workdir", str(ref)]) == 0
  shutil.copytree(ref, resumed)
  shutil.rmtree(resumed / "checkpoints" / "10")           # as if it had stopped after step 5
  capsys.readouterr()
  assert entry.train([*argv, "--workdir", str(resumed)]) == 0
  assert "resumed from step 5" in capsys.readouterr().out
  (s1, p1), (s2, p2) = final_params(ref), final_params(resumed)
  assert s1 == s2 == 10
  names = ["/".join(k) for k in flax.traverse_util.flatten_dict(p1)]
  assert any(n.endswith("sigma_u") for n in names) and any(n.endswith("sigma_v") for n in names)
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
