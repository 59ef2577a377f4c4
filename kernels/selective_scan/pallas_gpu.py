"""Selective scan on CUDA GPUs: Pallas Triton kernels, forward and backward.

Grid (batch, channel block): each program owns bd channels of one sequence and walks it
with fori_loops (chunks, then tokens), keeping the [N, bd] state in registers. Per token
it loads one row of u / delta (bd values) and of B / C (N values) from global memory.

The forward stores the state entering every chunk. The backward walks chunks last to
first; Triton has no scratch memory and register tensors cannot be indexed, so the chunk's
recomputed states go to a per-program global workspace [L, N, bd] (an extra output the
wrapper drops), written and read back by the same program with a barrier in between.
dB / dC are per channel block (summed by the wrapper), dA per batch row.

Triton wants power-of-two tiles: N is padded to a power of two (zero B/C columns and
A = 0 keep the padded states at exactly 0) and D to a multiple of the channel block.
compiler_params are always `pltriton.CompilerParams`: jax 0.10.2 would otherwise pick the
Mosaic GPU backend.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels.selective_scan import steps

BLOCK_D = 32        # channels per program: a [16, 32] f32 state is 4 registers per thread
PARAMS = pltriton.CompilerParams(num_warps=4, num_stages=1)


def _layout(u_BTD, d_BTD, A_DN, B_BTN, C_BTN):
  D, N = A_DN.shape
  bd = min(BLOCK_D, max(16, 1 << (D - 1).bit_length()))
  Np = 1 << (N - 1).bit_length()
  pad = lambda a, axis, n: jnp.pad(a, [(0, n if i == axis % a.ndim else 0) for i in range(a.ndim)])
  u, d = (pad(v, -1, -D % bd) for v in (u_BTD, d_BTD))
  A_ND = pad(pad(A_DN, 1, Np - N), 0, -D % bd).T
  return bd, Np, u, d, A_ND, pad(B_BTN, -1, Np - N), pad(C_BTN, -1, Np - N), pad


def _specs(T, Np, bd, nc):
  tok = pl.BlockSpec((None, T, bd), lambda b, d: (b, 0, d))
  A = pl.BlockSpec((Np, bd), lambda b, d: (0, d))
  bc = pl.BlockSpec((None, T, Np), lambda b, d: (b, 0, 0))
  state = pl.BlockSpec((None, Np, bd), lambda b, d: (b, 0, d))
  chunk_state = pl.BlockSpec((None, nc, Np, bd), lambda b, d: (b, 0, 0, d))
  return tok, A, bc, state, chunk_state


def _loads(u_ref, d_ref, B_ref, C_ref, t, acc):
  row = lambda r: r[t].astype(acc)[None, :]
  col = lambda r: r[t].astype(acc)[:, None]
  return row(d_ref), row(u_ref), col(B_ref), col(C_ref)


def _fwd_kernel(u_ref, d_ref, A_ref, B_ref, C_ref, h0_ref, y_ref, hT_ref, hc_ref, *, L, nc):
  acc = hT_ref.dtype
  A_NB = A_ref[...].astype(acc)

  def chunk(c, x_NB):
    hc_ref[c] = x_NB

    def token(i, x_NB):
      t = c * L + i
      d, u, b, cc = _loads(u_ref, d_ref, B_ref, C_ref, t, acc)
      x_NB = steps.step_fwd(x_NB, A_NB, d, u, b)
      y_ref[t] = steps.readout(x_NB, cc).reshape(-1).astype(y_ref.dtype)
      return x_NB

    return jax.lax.fori_loop(0, L, token, x_NB)

  hT_ref[...] = jax.lax.fori_loop(0, nc, chunk, h0_ref[...].astype(acc))


def scan_fwd(u_BTD, d_BTD, A_DN, B_BTN, C_BTN, h0_BDN, *, chunk, interpret=False):
  """Same contract as pallas_tpu.scan_fwd."""
  Bsz, T, D = u_BTD.shape
  N, L, acc = A_DN.shape[1], chunk, h0_BDN.dtype
  bd, Np, u, d, A_ND, B_, C_, pad = _layout(u_BTD, d_BTD, A_DN, B_BTN, C_BTN)
  Dp, nc = u.shape[2], T // L
  tok, A_spec, bc, state, chunk_state = _specs(T, Np, bd, nc)
  h0 = pad(pad(h0_BDN, 2, Np - N), 1, Dp - D).transpose(0, 2, 1)
  sds = jax.ShapeDtypeStruct
  y, hT, hc = pl.pallas_call(
      lambda *refs: _fwd_kernel(*refs, L=L, nc=nc),
      grid=(Bsz, Dp // bd),
      in_specs=[tok, tok, A_spec, bc, bc, state],
      out_specs=[tok, state, chunk_state],
      out_shape=[sds((Bsz, T, Dp), u_BTD.dtype), sds((Bsz, Np, Dp), acc),
                 sds((Bsz, nc, Np, Dp), acc)],
      compiler_params=PARAMS,
      interpret=interpret,
      name="selective_scan_fwd",
  )(u, d, A_ND, B_, C_, h0)
  return y[..., :D], hT[:, :N, :D].transpose(0, 2, 1), hc


def _bwd_kernel(u_ref, d_ref, A_ref, B_ref, C_ref, hc_ref, dy_ref, dhT_ref,
                du_ref, dd_ref, dB_ref, dC_ref, dA_ref, dh0_ref, xs_ref, *, L, nc, interpret):
  acc = dh0_ref.dtype
  A_NB = A_ref[...].astype(acc)
  # Orders the workspace writes before the reads by other threads of the program.
  barrier = (lambda: None) if interpret else pltriton.debug_barrier

  def chunk(i, carry):
    c = nc - 1 - i

    def recompute(j, x_NB):           # xs[j] = state before token c*L + j
      xs_ref[j] = x_NB
      d, u, b, _ = _loads(u_ref, d_ref, B_ref, C_ref, c * L + j, acc)
      return steps.step_fwd(x_NB, A_NB, d, u, b)

    jax.lax.fori_loop(0, L, recompute, hc_ref[c])
    barrier()

    def token(k, carry):
      dh_NB, dA_NB = carry
      j = L - 1 - k
      t = c * L + j
      d, u, b, cc = _loads(u_ref, d_ref, B_ref, C_ref, t, acc)
      dy = dy_ref[t].astype(acc)[None, :]
      dh_NB, du, dd, dB, dC, dA_t = steps.step_bwd(xs_ref[j], dh_NB, A_NB, d, u, b, cc, dy)
      du_ref[t] = du.reshape(-1).astype(du_ref.dtype)
      dd_ref[t] = dd.reshape(-1).astype(dd_ref.dtype)
      dB_ref[t] = dB.reshape(-1).astype(dB_ref.dtype)
      dC_ref[t] = dC.reshape(-1).astype(dC_ref.dtype)
      return dh_NB, dA_NB + dA_t

    carry = jax.lax.fori_loop(0, L, token, carry)
    barrier()                         # the next chunk overwrites the workspace
    return carry

  dh_NB, dA_NB = jax.lax.fori_loop(
      0, nc, chunk, (dhT_ref[...].astype(acc), jnp.zeros(A_NB.shape, acc)))
  dh0_ref[...] = dh_NB
  dA_ref[...] = dA_NB


def scan_bwd(u_BTD, d_BTD, A_DN, B_BTN, C_BTN, hc, dy_BTD, dhT_BDN, *, chunk, interpret=False):
  """Same contract as pallas_tpu.scan_bwd."""
  Bsz, T, D = u_BTD.shape
  N, L, acc = A_DN.shape[1], chunk, hc.dtype
  bd, Np, u, d, A_ND, B_, C_, pad = _layout(u_BTD, d_BTD, A_DN, B_BTN, C_BTN)
  Dp, nc = u.shape[2], T // L
  nD = Dp // bd
  tok, A_spec, bc, state, chunk_state = _specs(T, Np, bd, nc)
  part_bc = pl.BlockSpec((None, None, T, Np), lambda b, d_: (d_, b, 0, 0))
  work = pl.BlockSpec((None, None, L, Np, bd), lambda b, d_: (b, d_, 0, 0, 0))
  sds = jax.ShapeDtypeStruct
  dhT = pad(pad(dhT_BDN, 2, Np - N), 1, Dp - D).transpose(0, 2, 1)
  du, dd, dB, dC, dA, dh0, _ = pl.pallas_call(
      lambda *refs: _bwd_kernel(*refs, L=L, nc=nc, interpret=interpret),
      grid=(Bsz, nD),
      in_specs=[tok, tok, A_spec, bc, bc, chunk_state, tok, state],
      out_specs=[tok, tok, part_bc, part_bc, state, state, work],
      out_shape=[sds((Bsz, T, Dp), acc), sds((Bsz, T, Dp), acc),
                 sds((nD, Bsz, T, Np), acc), sds((nD, Bsz, T, Np), acc),
                 sds((Bsz, Np, Dp), acc), sds((Bsz, Np, Dp), acc),
                 sds((Bsz, nD, L, Np, bd), acc)],
      compiler_params=PARAMS,
      interpret=interpret,
      name="selective_scan_bwd",
  )(u, d, A_ND, B_, C_, hc, pad(dy_BTD, -1, Dp - D), dhT)
  return (du[..., :D], dd[..., :D], dA.sum(0)[:N, :D].T, dB.sum(0)[..., :N],
          dC.sum(0)[..., :N], dh0[:, :N, :D].transpose(0, 2, 1))
