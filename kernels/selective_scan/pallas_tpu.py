"""Selective scan on TPU: Pallas Mosaic kernels, forward and backward.

Grid (batch, channel block, chunk); the chunk axis is "arbitrary" and carries the [N, bd]
state in VMEM scratch. Inside a chunk a fori_loop walks the L tokens in groups of 8: one
aligned [8, bd] load of u / delta (and dy), 8 unrolled steps, each one VPU multiply-add on the
[N, bd] tile (no MXU work: the decay is diagonal), then one aligned [8, bd] store of y. (A 1-row
slice at a dynamic sublane offset lowers, but Mosaic rejects it for bf16, where two rows share a
32-bit sublane: "cannot statically prove that index ... is a multiple of 8"; the group start
carries a pl.multiple_of(..., 8) hint.) B and C come as [N, L] tiles per chunk (transposed
outside) so that token t's [N, 1] column is a masked lane reduction.

The forward saves the state entering each chunk. The backward walks the chunks last to
first: it recomputes the chunk's L states into a VMEM scratch [L, N, bd] from the saved
entry state, then runs the adjoint recurrence backwards over the tokens (axlearn's Mamba
kernel uses the same save-boundaries-and-recompute scheme). dA is summed across chunks in
scratch; dB / dC are per channel block and summed by the wrapper.

Block sizes: bd = 256 lanes (two vregs wide) or all of D when D <= 256; L % 8 == 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels.selective_scan import steps

BLOCK_D = 256
ROWS = 8      # tokens per aligned [8, bd] load / store of u, delta, dy, y (L % 8 == 0)
_SEMANTICS = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))


def _layout(u_BTD, d_BTD, A_DN, B_BTN, C_BTN, L):
  """Pads D to a multiple of the channel block; B/C to [B, T/L, N, L]; A to [N, D]."""
  Bsz, T, D = u_BTD.shape
  bd = D if D <= BLOCK_D else BLOCK_D
  pad_d = lambda a: jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, -D % bd)])
  per_chunk = lambda a: a.reshape(Bsz, T // L, L, -1).transpose(0, 1, 3, 2)
  return bd, pad_d(u_BTD), pad_d(d_BTD), pad_d(A_DN.T), per_chunk(B_BTN), per_chunk(C_BTN)


def _specs(N, L, bd, chunk_of):
  tok = pl.BlockSpec((None, L, bd), lambda b, d, c: (b, chunk_of(c), d))
  A = pl.BlockSpec((N, bd), lambda b, d, c: (0, d))
  bc = pl.BlockSpec((None, None, N, L), lambda b, d, c: (b, chunk_of(c), 0, 0))
  state = pl.BlockSpec((None, N, bd), lambda b, d, c: (b, 0, d))
  chunk_state = pl.BlockSpec((None, None, N, bd), lambda b, d, c: (b, chunk_of(c), 0, d))
  return tok, A, bc, state, chunk_state


def _rows(ref, t0, acc):
  """Rows t0 .. t0+7 of a [L, bd] token tile; t0 is a multiple of 8 (pl.multiple_of) so
  Mosaic can prove the sublane offset aligned, which a 1-row slice of bf16 cannot be."""
  return ref[pl.ds(t0, ROWS), :].astype(acc)


def _fwd_kernel(u_ref, d_ref, A_ref, B_ref, C_ref, h0_ref, y_ref, hT_ref, hc_ref, x_scr):
  c, acc = pl.program_id(2), x_scr.dtype

  @pl.when(c == 0)
  def _():
    x_scr[...] = h0_ref[...].astype(acc)

  hc_ref[...] = x_scr[...]
  A_NB, B_NL, C_NL = (r[...].astype(acc) for r in (A_ref, B_ref, C_ref))

  def group(g, x_NB):
    t0 = pl.multiple_of(g * ROWS, ROWS)
    d_GB, u_GB = _rows(d_ref, t0, acc), _rows(u_ref, t0, acc)
    ys = []
    for j in range(ROWS):             # unrolled: static row slices of the loaded tiles
      x_NB = steps.step_fwd(x_NB, A_NB, d_GB[j:j + 1], u_GB[j:j + 1],
                            steps.pick_column(B_NL, t0 + j))
      ys.append(steps.readout(x_NB, steps.pick_column(C_NL, t0 + j)))
    y_ref[pl.ds(t0, ROWS), :] = jnp.concatenate(ys, 0).astype(y_ref.dtype)
    return x_NB

  x_scr[...] = jax.lax.fori_loop(0, u_ref.shape[0] // ROWS, group, x_scr[...])

  @pl.when(c == pl.num_programs(2) - 1)
  def _():
    hT_ref[...] = x_scr[...]


def scan_fwd(u_BTD, d_BTD, A_DN, B_BTN, C_BTN, h0_BDN, *, chunk, interpret=False):
  """Returns (y_BTD, final_state_BDN, chunk_states). T must be a multiple of chunk."""
  Bsz, T, D = u_BTD.shape
  N, L, acc = A_DN.shape[1], chunk, h0_BDN.dtype
  bd, u, d, A_ND, B_, C_ = _layout(u_BTD, d_BTD, A_DN, B_BTN, C_BTN, L)
  Dp, nc = u.shape[2], T // L
  tok, A_spec, bc, state, chunk_state = _specs(N, L, bd, lambda c: c)
  h0 = jnp.pad(h0_BDN.transpose(0, 2, 1), [(0, 0), (0, 0), (0, Dp - D)])
  y, hT, hc = pl.pallas_call(
      _fwd_kernel,
      grid=(Bsz, Dp // bd, nc),
      in_specs=[tok, tok, A_spec, bc, bc, state],
      out_specs=[tok, state, chunk_state],
      out_shape=[jax.ShapeDtypeStruct((Bsz, T, Dp), u_BTD.dtype),
                 jax.ShapeDtypeStruct((Bsz, N, Dp), acc),
                 jax.ShapeDtypeStruct((Bsz, nc, N, Dp), acc)],
      scratch_shapes=[pltpu.VMEM((N, bd), acc)],
      compiler_params=_SEMANTICS,
      interpret=interpret,
      name="selective_scan_fwd",
  )(u, d, A_ND, B_, C_, h0)
  return y[..., :D], hT[..., :D].transpose(0, 2, 1), hc


def _bwd_kernel(u_ref, d_ref, A_ref, B_ref, C_ref, hc_ref, dy_ref, dhT_ref,
                du_ref, dd_ref, dB_ref, dC_ref, dA_ref, dh0_ref, dh_scr, dA_scr, xs_scr):
  c, acc, L = pl.program_id(2), dh_scr.dtype, u_ref.shape[0]

  @pl.when(c == 0)
  def _():
    dh_scr[...] = dhT_ref[...].astype(acc)
    dA_scr[...] = jnp.zeros_like(dA_scr)

  A_NB, B_NL, C_NL = (r[...].astype(acc) for r in (A_ref, B_ref, C_ref))

  def recompute(g, x_NB):             # xs[t] = state before token t
    t0 = pl.multiple_of(g * ROWS, ROWS)
    d_GB, u_GB = _rows(d_ref, t0, acc), _rows(u_ref, t0, acc)
    for j in range(ROWS):
      xs_scr[t0 + j] = x_NB           # leading (untiled) dim: any index is aligned
      x_NB = steps.step_fwd(x_NB, A_NB, d_GB[j:j + 1], u_GB[j:j + 1],
                            steps.pick_column(B_NL, t0 + j))
    return x_NB

  jax.lax.fori_loop(0, L // ROWS, recompute, hc_ref[...].astype(acc))
  lane = jax.lax.broadcasted_iota(jnp.int32, B_NL.shape, 1)

  def group(i, carry):                # token groups last to first, tokens last to first
    dh_NB, dA_NB, dB_NL, dC_NL = carry
    t0 = pl.multiple_of((L // ROWS - 1 - i) * ROWS, ROWS)
    d_GB, u_GB, dy_GB = (_rows(r, t0, acc) for r in (d_ref, u_ref, dy_ref))
    dus, dds = [None] * ROWS, [None] * ROWS
    for j in reversed(range(ROWS)):
      t = t0 + j
      dh_NB, dus[j], dds[j], dB_N1, dC_N1, dA_t = steps.step_bwd(
          xs_scr[t], dh_NB, A_NB, d_GB[j:j + 1], u_GB[j:j + 1], steps.pick_column(B_NL, t),
          steps.pick_column(C_NL, t), dy_GB[j:j + 1])
      # Scatter the [N, 1] columns into lane t of the chunk's [N, L] tiles.
      dB_NL = dB_NL + jnp.where(lane == t, dB_N1, 0.0)
      dC_NL = dC_NL + jnp.where(lane == t, dC_N1, 0.0)
      dA_NB = dA_NB + dA_t
    du_ref[pl.ds(t0, ROWS), :] = jnp.concatenate(dus, 0).astype(du_ref.dtype)
    dd_ref[pl.ds(t0, ROWS), :] = jnp.concatenate(dds, 0).astype(dd_ref.dtype)
    return dh_NB, dA_NB, dB_NL, dC_NL

  zeros_NL = jnp.zeros(B_NL.shape, acc)
  dh_NB, dA_NB, dB_NL, dC_NL = jax.lax.fori_loop(
      0, L // ROWS, group, (dh_scr[...], dA_scr[...], zeros_NL, zeros_NL))
  dB_ref[...] = dB_NL.astype(dB_ref.dtype)
  dC_ref[...] = dC_NL.astype(dC_ref.dtype)
  dh_scr[...] = dh_NB
  dA_scr[...] = dA_NB

  @pl.when(c == pl.num_programs(2) - 1)
  def _():
    dh0_ref[...] = dh_NB.astype(dh0_ref.dtype)
    dA_ref[...] = dA_NB.astype(dA_ref.dtype)


def scan_bwd(u_BTD, d_BTD, A_DN, B_BTN, C_BTN, hc, dy_BTD, dhT_BDN, *, chunk, interpret=False):
  """Returns (du_BTD, ddelta_BTD, dA_DN, dB_BTN, dC_BTN, dh0_BDN) in the accumulation dtype."""
  Bsz, T, D = u_BTD.shape
  N, L, acc = A_DN.shape[1], chunk, hc.dtype
  bd, u, d, A_ND, B_, C_ = _layout(u_BTD, d_BTD, A_DN, B_BTN, C_BTN, L)
  Dp, nc = u.shape[2], T // L
  nD = Dp // bd
  tok, A_spec, bc, state, chunk_state = _specs(N, L, bd, lambda c: nc - 1 - c)
  part_bc = pl.BlockSpec((None, None, None, N, L), lambda b, d_, c: (d_, b, nc - 1 - c, 0, 0))
  pad_d = lambda a: jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, Dp - D)])
  sds = jax.ShapeDtypeStruct
  du, dd, dB, dC, dA, dh0 = pl.pallas_call(
      _bwd_kernel,
      grid=(Bsz, nD, nc),
      in_specs=[tok, tok, A_spec, bc, bc, chunk_state, tok, state],
      out_specs=[tok, tok, part_bc, part_bc, state, state],
      out_shape=[sds((Bsz, T, Dp), acc), sds((Bsz, T, Dp), acc),
                 sds((nD, Bsz, nc, N, L), acc), sds((nD, Bsz, nc, N, L), acc),
                 sds((Bsz, N, Dp), acc), sds((Bsz, N, Dp), acc)],
      scratch_shapes=[pltpu.VMEM((N, bd), acc), pltpu.VMEM((N, bd), acc),
                      pltpu.VMEM((L, N, bd), acc)],
      compiler_params=_SEMANTICS,
      interpret=interpret,
      name="selective_scan_bwd",
  )(u, d, A_ND, B_, C_, hc, pad_d(dy_BTD), pad_d(dhT_BDN.transpose(0, 2, 1)))
  per_token = lambda g: g.sum(0).transpose(0, 1, 3, 2).reshape(Bsz, T, N)
  return (du[..., :D], dd[..., :D], dA.sum(0)[:, :D].T, per_token(dB), per_token(dC),
          dh0[..., :D].transpose(0, 2, 1))
