"""A run's parameters in and out of seqzoo, and sampling from them.

    params_io.py  params-only restores, flat safetensors (ours), imported runs (write_run)
    hf.py         Hugging Face GPT-2 / Llama folders, both directions (numpy only)
    stablehlo.py  jax.export modules: the forward pass and a KV-cache decode step
    generate.py   autoregressive sampling (eval.py --sample)
"""
