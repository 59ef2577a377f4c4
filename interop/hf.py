"""Hugging Face `transformers` layouts of the two decoder baselines, in both directions.

    arch = hf_arch(model_cfg)                  # "gpt2" | "llama", or ConfigError saying why not
    hf_config, tensors = to_hf(params, model_cfg)
    model_cfg, params = from_hf(hf_config, tensors, model_cfg_defaults)

Pure numpy (no torch needed to convert). Layouts, ours -> theirs (D model, H/K heads, d head, F ff):
  GPT2LMHeadModel: Conv1D weights are [in, out], so our kernels keep their orientation; c_attn is
    [D, 3*H*d] = q | k | v, each head-major (HF splits the last dim as (H, d)). Biases always exist
    there (zeros are written when we have none). activation "gelu_new" is our tanh GELU.
  LlamaForCausalLM: nn.Linear weights are [out, in] (transposed); q_proj is [H*d, D]; our fused
    SwiGLU kernel [D, 2, F] is gate = [:, 0] and up = [:, 1]. HF's rotary embedding rotates the
    pairs (i, i + d/2) ("rotate_half"), exactly our layers.embed.rope, so q/k need no permutation.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

import modelzoo
from configs.base import ConfigError, ModelConfig
from interop.params_io import load_tensors, read_json, save_file

GPT2_ACT = {False: "gelu_new", True: "gelu"}        # our gelu_exact -> HF activation_function
# seqzoo's tokenizers have no BOS/EOS ids; HF's class defaults (GPT-2: 50256) may not exist here.
NO_SPECIAL_TOKENS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)


def hf_arch(m: ModelConfig) -> str:
  """The transformers class family that computes exactly this model, or ConfigError naming why none."""
  if m.name != "decoder":
    raise ConfigError(f"model.name={m.name!r} has no Hugging Face transformers class; export it "
                      "with --format safetensors or --format stablehlo")
  why = [f"model.{k}={getattr(m, k)!r} (HF needs {v!r})" for k, v in
         dict(norm_placement="pre", attention="softmax", qk_norm=False, layer_scale=0.0,
              mlp_topk=0, attn_gate=False, attn_clip_gamma=0.0, attn_clip_zeta=1.0,
              sigma_reparam=False, head_bias=False).items()
         if getattr(m, k) != v]
  style = (m.norm, m.pos, m.mlp)
  if style == ("layernorm", "learned", "gelu"):
    arch = "gpt2"
    d_head = m.head_dim
    if m.n_kv_heads not in (0, m.n_heads):
      why.append(f"model.n_kv_heads={m.n_kv_heads} (GPT-2 has no grouped-query attention)")
    if d_head * m.n_heads != m.d_model:
      why.append(f"model.d_head={m.d_head} (GPT-2 needs n_heads * d_head = d_model)")
  elif style == ("rmsnorm", "rope", "swiglu"):
    arch = "llama"
  else:
    why.append(f"model.norm/pos/mlp={'/'.join(style)} is neither GPT-2 (layernorm/learned/gelu) "
               "nor Llama (rmsnorm/rope/swiglu)")
  if why:
    raise ConfigError("this decoder has no Hugging Face transformers equivalent: " + "; ".join(why)
                      + ". Export it with --format safetensors or --format stablehlo")
  return arch


def per_layer(params, m: ModelConfig) -> list[dict]:
  """The layer subtrees as a list, whether the stack was scanned (leading L axis) or unrolled."""
  if m.scan_layers:
    return [_tree_map(lambda a, i=i: np.asarray(a)[i], params["layers"]) for i in range(m.n_layers)]
  return [params[f"layers_{i}"] for i in range(m.n_layers)]


def with_layers(top: dict, layers: list[dict], m: ModelConfig) -> dict:
  out = dict(top)
  if m.scan_layers:
    out["layers"] = _tree_map(lambda *xs: np.stack(xs), *layers)
  else:
    out.update({f"layers_{i}": l for i, l in enumerate(layers)})
  return out


def _tree_map(f, *trees):
  if isinstance(trees[0], dict):
    return {k: _tree_map(f, *(t[k] for t in trees)) for k in trees[0]}
  return f(*trees)


# ---------------------------------------------------------------------------------------------
# Configs.

def hf_config(m: ModelConfig, dtype: str) -> dict:
  arch = hf_arch(m)
  if arch == "gpt2":
    return dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=m.vocab_size,
                n_positions=m.max_len, n_embd=m.d_model, n_layer=m.n_layers, n_head=m.n_heads,
                n_inner=m.d_ff, activation_function=GPT2_ACT[m.gelu_exact],
                layer_norm_epsilon=m.norm_eps, tie_word_embeddings=m.tie_embeddings,
                scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                reorder_and_upcast_attn=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                initializer_range=m.init_std, torch_dtype=dtype, **NO_SPECIAL_TOKENS)
  return dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=m.vocab_size,
              hidden_size=m.d_model, intermediate_size=m.d_ff, num_hidden_layers=m.n_layers,
              num_attention_heads=m.n_heads, num_key_value_heads=m.kv_heads,
              head_dim=m.head_dim, max_position_embeddings=m.max_len,
              rms_norm_eps=m.norm_eps, rope_theta=m.rope_theta,
              rope_parameters=dict(rope_type="default", rope_theta=m.rope_theta),
              hidden_act="silu", tie_word_embeddings=m.tie_embeddings, attention_bias=m.use_bias,
              mlp_bias=m.use_bias, attention_dropout=0.0, initializer_range=m.init_std,
              torch_dtype=dtype, **NO_SPECIAL_TOKENS)


def from_hf_config(c: dict, defaults: ModelConfig | None = None) -> ModelConfig:
  """The decoder config of an HF config.json; non-architectural fields (remat, dtypes, ...) from
  defaults (any family's config: the fields it shares with the decoder)."""
  kind = c.get("model_type")
  if kind == "gpt2":
    act = c.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
      raise ConfigError(f"GPT-2 activation_function={act!r}: only gelu_new/gelu_pytorch_tanh "
                        "(tanh GELU) and gelu (erf) are supported")
    for k in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
      if c.get(k):
        raise ConfigError(f"GPT-2 {k}=true is not supported")
    if c.get("scale_attn_weights", True) is not True:
      raise ConfigError("GPT-2 scale_attn_weights=false is not supported")
    D, H = c.get("n_embd", 768), c.get("n_head", 12)
    arch = dict(norm="layernorm", norm_bias=True, pos="learned", mlp="gelu", use_bias=True,
                gelu_exact=act == "gelu", vocab_size=c.get("vocab_size", 50257), d_model=D,
                n_layers=c.get("n_layer", 12), n_heads=H, n_kv_heads=0, d_head=0,
                d_ff=c.get("n_inner") or 4 * D, max_len=c.get("n_positions", 1024),
                norm_eps=c.get("layer_norm_epsilon", 1e-5),
                tie_embeddings=c.get("tie_word_embeddings", True))
  elif kind == "llama":
    rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    if rope.get("rope_type", rope.get("type", "default")) != "default":
      raise ConfigError(f"Llama rope type {rope.get('rope_type', rope.get('type'))!r} (RoPE "
                        "scaling) is not supported: only the default rotary embedding")
    if c.get("partial_rotary_factor", rope.get("partial_rotary_factor", 1.0)) != 1.0:
      raise ConfigError("Llama partial_rotary_factor != 1 is not supported")
    if c.get("hidden_act", "silu") != "silu":
      raise ConfigError(f"Llama hidden_act={c.get('hidden_act')!r}: only silu (SwiGLU) is supported")
    if bool(c.get("attention_bias", False)) != bool(c.get("mlp_bias", False)):
      raise ConfigError("Llama attention_bias != mlp_bias: seqzoo has one model.use_bias for both")
    D, H = c.get("hidden_size", 4096), c.get("num_attention_heads", 32)
    arch = dict(norm="rmsnorm", norm_bias=False, pos="rope", mlp="swiglu",
                use_bias=bool(c.get("attention_bias", False)), gelu_exact=False,
                vocab_size=c.get("vocab_size", 32000), d_model=D,
                n_layers=c.get("num_hidden_layers", 32), n_heads=H,
                n_kv_heads=c.get("num_key_value_heads") or H,
                d_head=c.get("head_dim") or D // H, d_ff=c.get("intermediate_size", 11008),
                max_len=c.get("max_position_embeddings", 2048),
                norm_eps=c.get("rms_norm_eps", 1e-6),
                rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
                tie_embeddings=c.get("tie_word_embeddings", False))
  else:
    raise ConfigError(f"HF model_type={kind!r} is not supported: seqzoo imports gpt2 and llama")
  decoder = modelzoo.as_family(defaults or modelzoo.model_config("decoder"), "decoder")
  return dataclasses.replace(decoder, norm_placement="pre", attention="softmax", qk_norm=False,
                             layer_scale=0.0, mlp_topk=0, attn_gate=False, attn_clip_gamma=0.0,
                             attn_clip_zeta=1.0, sigma_reparam=False, **arch)


# ---------------------------------------------------------------------------------------------
# Tensors.

def to_hf(params, m: ModelConfig, dtype=None) -> tuple[dict, dict]:
  """(HF config.json dict, {HF tensor name: numpy array}) for a GPT-2 or Llama style decoder."""
  p = _tree_map(np.asarray, params)
  dtype = np.dtype(dtype or p["embed"]["embedding"].dtype)
  arch, out = hf_arch(m), {}
  H, K = m.n_heads, m.kv_heads
  d = m.head_dim
  D = m.d_model
  bias = lambda l, name, n: l[name]["bias"].reshape(-1) if "bias" in l[name] else np.zeros(n, dtype)
  for i, l in enumerate(per_layer(p, m)):
    a, f = l["attn"], l["mlp"]
    if arch == "gpt2":
      pre = f"transformer.h.{i}."
      out[pre + "ln_1.weight"], out[pre + "ln_1.bias"] = l["norm1"]["scale"], bias(l, "norm1", D)
      out[pre + "ln_2.weight"], out[pre + "ln_2.bias"] = l["norm2"]["scale"], bias(l, "norm2", D)
      out[pre + "attn.c_attn.weight"] = np.concatenate(
          [a[n]["kernel"].reshape(D, H * d) for n in ("query", "key", "value")], axis=1)
      out[pre + "attn.c_attn.bias"] = np.concatenate([bias(a, n, H * d) for n in ("query", "key", "value")])
      out[pre + "attn.c_proj.weight"] = a["out"]["kernel"].reshape(H * d, D)
      out[pre + "attn.c_proj.bias"] = bias(a, "out", D)
      out[pre + "mlp.c_fc.weight"], out[pre + "mlp.c_fc.bias"] = f["wi"]["kernel"], bias(f, "wi", m.d_ff)
      out[pre + "mlp.c_proj.weight"], out[pre + "mlp.c_proj.bias"] = f["wo"]["kernel"], bias(f, "wo", D)
    else:
      pre = f"model.layers.{i}."
      out[pre + "input_layernorm.weight"] = l["norm1"]["scale"]
      out[pre + "post_attention_layernorm.weight"] = l["norm2"]["scale"]
      for ours, theirs, n in (("query", "q_proj", H), ("key", "k_proj", K), ("value", "v_proj", K)):
        out[pre + f"self_attn.{theirs}.weight"] = a[ours]["kernel"].reshape(D, n * d).T
        if m.use_bias:
          out[pre + f"self_attn.{theirs}.bias"] = a[ours]["bias"].reshape(-1)
      out[pre + "self_attn.o_proj.weight"] = a["out"]["kernel"].reshape(H * d, D).T
      out[pre + "mlp.gate_proj.weight"] = f["wi"]["kernel"][:, 0, :].T
      out[pre + "mlp.up_proj.weight"] = f["wi"]["kernel"][:, 1, :].T
      out[pre + "mlp.down_proj.weight"] = f["wo"]["kernel"].T
      if m.use_bias:
        out[pre + "self_attn.o_proj.bias"] = a["out"]["bias"]
        out[pre + "mlp.gate_proj.bias"], out[pre + "mlp.up_proj.bias"] = f["wi"]["bias"]
        out[pre + "mlp.down_proj.bias"] = f["wo"]["bias"]
  if arch == "gpt2":
    out["transformer.wte.weight"] = p["embed"]["embedding"]
    out["transformer.wpe.weight"] = p["pos"]["embedding"]
    out["transformer.ln_f.weight"] = p["norm_f"]["scale"]
    out["transformer.ln_f.bias"] = p["norm_f"]["bias"] if "bias" in p["norm_f"] else np.zeros(D, dtype)
  else:
    out["model.embed_tokens.weight"] = p["embed"]["embedding"]
    out["model.norm.weight"] = p["norm_f"]["scale"]
  if not m.tie_embeddings:
    out["lm_head.weight"] = p["head"]["kernel"].T
  tensors = {k: np.ascontiguousarray(v.astype(dtype)) for k, v in out.items()}
  return hf_config(m, dtype.name), tensors


def from_hf(c: dict, tensors: dict,
            defaults: ModelConfig | None = None) -> tuple[ModelConfig, dict]:
  """(ModelConfig, our params as numpy) from an HF config dict and its tensors (names as saved)."""
  m = from_hf_config(c, defaults)
  # GPT2Model checkpoints (no LM head) name tensors without the "transformer." prefix.
  if m.pos == "learned" and "wte.weight" in tensors and "transformer.wte.weight" not in tensors:
    tensors = {("transformer." + k if not k.startswith("lm_head") else k): v for k, v in tensors.items()}
  used = set()

  def take(name):
    if name not in tensors:
      raise ConfigError(f"the HF checkpoint has no tensor {name!r} (model_type={c.get('model_type')!r})")
    used.add(name)
    return np.asarray(tensors[name])
  H, K = m.n_heads, m.kv_heads
  d, D, F = m.head_dim, m.d_model, m.d_ff
  layers = []
  for i in range(m.n_layers):
    if m.pos == "learned":
      pre = f"transformer.h.{i}."
      w, b = take(pre + "attn.c_attn.weight"), take(pre + "attn.c_attn.bias")
      qkv = {n: dict(kernel=w[:, j * D:(j + 1) * D].reshape(D, H, d),
                     bias=b[j * D:(j + 1) * D].reshape(H, d))
             for j, n in enumerate(("query", "key", "value"))}
      attn = dict(qkv, out=dict(kernel=take(pre + "attn.c_proj.weight").reshape(H, d, D),
                                bias=take(pre + "attn.c_proj.bias")))
      mlp = dict(wi=dict(kernel=take(pre + "mlp.c_fc.weight"), bias=take(pre + "mlp.c_fc.bias")),
                 wo=dict(kernel=take(pre + "mlp.c_proj.weight"), bias=take(pre + "mlp.c_proj.bias")))
      norms = {o: dict(scale=take(pre + t + ".weight"), bias=take(pre + t + ".bias"))
               for o, t in (("norm1", "ln_1"), ("norm2", "ln_2"))}
    else:
      pre = f"model.layers.{i}."
      attn = {}
      for ours, theirs, n in (("query", "q_proj", H), ("key", "k_proj", K), ("value", "v_proj", K)):
        attn[ours] = dict(kernel=take(pre + f"self_attn.{theirs}.weight").T.reshape(D, n, d))
        if m.use_bias:
          attn[ours]["bias"] = take(pre + f"self_attn.{theirs}.bias").reshape(n, d)
      attn["out"] = dict(kernel=take(pre + "self_attn.o_proj.weight").T.reshape(H, d, D))
      wi = np.stack([take(pre + "mlp.gate_proj.weight").T, take(pre + "mlp.up_proj.weight").T], 1)
      mlp = dict(wi=dict(kernel=wi), wo=dict(kernel=take(pre + "mlp.down_proj.weight").T))
      if m.use_bias:
        attn["out"]["bias"] = take(pre + "self_attn.o_proj.bias")
        mlp["wi"]["bias"] = np.stack([take(pre + "mlp.gate_proj.bias"), take(pre + "mlp.up_proj.bias")])
        mlp["wo"]["bias"] = take(pre + "mlp.down_proj.bias")
      norms = {o: dict(scale=take(pre + t + ".weight"))
               for o, t in (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"))}
    layers.append(dict(norms, attn=attn, mlp=mlp))
  if m.pos == "learned":
    top = dict(embed=dict(embedding=take("transformer.wte.weight")),
               pos=dict(embedding=take("transformer.wpe.weight")),
               norm_f=dict(scale=take("transformer.ln_f.weight"), bias=take("transformer.ln_f.bias")))
  else:
    top = dict(embed=dict(embedding=take("model.embed_tokens.weight")),
               norm_f=dict(scale=take("model.norm.weight")))
  if not m.tie_embeddings:
    top["head"] = dict(kernel=take("lm_head.weight").T)
  # Buffers HF may have saved (attention masks, rotary inv_freq) carry no parameters.
  left = sorted(k for k in tensors if k not in used and not k.endswith((".attn.bias",
                ".attn.masked_bias", "rotary_emb.inv_freq")) and k != "lm_head.weight")
  if left:
    raise ConfigError(f"the HF checkpoint has tensors seqzoo would ignore: {left[:5]}"
                      f"{' ...' if len(left) > 5 else ''}")
  params = _tree_map(lambda a: np.ascontiguousarray(a), with_layers(top, layers, m))
  return m, params


# ---------------------------------------------------------------------------------------------
# Folders (config.json + safetensors, as save_pretrained writes them; pickle files are refused).

def write_dir(out, config: dict, tensors: dict) -> None:
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(config, indent=2))
  save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})


def read_dir(src) -> tuple[dict, dict]:
  """(config dict, {name: numpy array}) of a save_pretrained folder, single or sharded safetensors."""
  src = Path(src)
  if not (src / "config.json").is_file():
    raise ConfigError(f"{src}: no config.json (not a Hugging Face model folder)")
  config = read_json(src / "config.json")
  index = src / "model.safetensors.index.json"
  if index.is_file():
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ConfigError(f"{index}: no \"weight_map\" object naming the tensors' files")
    files = sorted(set(map(str, weight_map.values())))
  elif (src / "model.safetensors").is_file():
    files = ["model.safetensors"]
  else:
    found = sorted(p.name for p in src.glob("*.bin")) + sorted(p.name for p in src.glob("*.pt*"))
    raise ConfigError(f"{src}: no model.safetensors" + (
        f" ({', '.join(found)} are pickle files, which seqzoo never loads: re-save the model with "
        "save_pretrained(dir, safe_serialization=True))" if found else ""))
  tensors = {}
  for f in files:
    tensors.update(load_tensors(src / f))
  return config, tensors
