"""One chunk of the delta rule as straight-line array code, shared by the TPU and Triton kernels.

Everything here works on 2-D values already loaded from refs (C = chunk, K/V = head dims):
  q, k: [C, K]   v: [C, V]   beta, gc: columns [C, 1]   gr: gc as a row [1, C]   S: [K, V]
gc is the within-chunk cumsum of g (computed outside: TPU Pallas cannot lower cumsum); it comes in
both layouts so Gam_ij = exp(gc_i - gc_j) is a broadcast, not an in-kernel transpose.
Only ops both Mosaic TPU and Triton lower are used: 2-D dot_general, elementwise, iota, where,
keepdims reductions and fori_loop. No dynamic indexing of values (Triton has none): a row or an
element is picked with an iota mask and a sum. Triton's tl.dot needs every dim >= 16, so no dot
has a size-1 operand. See reference.py for the chunked equations.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

# The default dot precision: IEEE f32 on Triton (not TF32), multi-pass f32 on the MXU. The Triton
# kernels pass their own (pallas_gpu.py: IEEE dots are slow to compile and overflow shared memory).
HIGHEST = lax.Precision.HIGHEST


def dots(prec=HIGHEST):
  """(mm, mm_tn, mm_nt): a @ b, a^T @ b and a @ b^T at dot precision `prec`."""
  def dot(ca, cb):
    return lambda a, b: lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), precision=prec,
                                        preferred_element_type=a.dtype)
  return dot(1, 0), dot(0, 0), dot(1, 1)


def _iotas(C):
  return lax.broadcasted_iota(jnp.int32, (C, C), 0), lax.broadcasted_iota(jnp.int32, (C, C), 1)


def _decays(gc_C1, gr_1C):
  """Gam (masked, inclusive lower), gamma_C1 = exp(gc), gl_11 = gc of the last token."""
  C = gc_C1.shape[0]
  r_CC, c_CC = _iotas(C)
  incl_CC = r_CC >= c_CC
  gam_CC = jnp.where(incl_CC, jnp.exp(jnp.where(incl_CC, gc_C1 - gr_1C, 0.0)), 0.0)
  last_C1 = lax.broadcasted_iota(jnp.int32, (C, 1), 0) == C - 1
  gl_11 = jnp.sum(jnp.where(last_C1, gc_C1, 0.0), axis=0, keepdims=True)
  return gam_CC, jnp.exp(gc_C1), gl_11


def _a_matrix(k_CK, beta_C1, gam_CC, prec):
  _, _, mm_nt = dots(prec)
  r_CC, c_CC = _iotas(k_CK.shape[0])
  return jnp.where(r_CC > c_CC, beta_C1 * mm_nt(k_CK, k_CK) * gam_CC, 0.0)


def wy_inverse(k_CK, beta_C1, gc_C1, gr_1C, prec=HIGHEST):
  """X = ((I + A)^-1)^T with A = tril(diag(beta) K K^T * Gam, -1), by forward substitution.

  The transpose is what keeps the loop free of size-1 dots: row i of T = column i of X is
  e_i - sum_j A_ij X[:, j], a lane-broadcast multiply and a row sum.
  """
  gam_CC, _, _ = _decays(gc_C1, gr_1C)
  a_CC = _a_matrix(k_CK, beta_C1, gam_CC, prec)
  r_CC, c_CC = _iotas(a_CC.shape[0])

  def column(i, x_CC):
    a_1C = jnp.sum(jnp.where(r_CC == i, a_CC, 0.0), axis=0, keepdims=True)  # row i of A
    s_C1 = jnp.sum(x_CC * a_1C, axis=1, keepdims=True)
    return jnp.where(c_CC == i, x_CC - s_C1, x_CC)  # column i was e_i

  x0_CC = jnp.where(r_CC == c_CC, 1.0, 0.0).astype(a_CC.dtype)
  return lax.fori_loop(1, a_CC.shape[0], column, x0_CC)


def _wu(x_CC, k_CK, v_CV, beta_C1, gamma_C1, prec):
  _, mm_tn, _ = dots(prec)
  kb_CK = k_CK * (beta_C1 * gamma_C1)
  vb_CV = v_CV * beta_C1
  return kb_CK, vb_CV, mm_tn(x_CC, kb_CK), mm_tn(x_CC, vb_CV)


def chunk_forward(q_CK, k_CK, v_CV, beta_C1, gc_C1, gr_1C, x_CC, s_KV, scale, prec=HIGHEST):
  """Output of the chunk and the state leaving it, given the state s_KV entering it.

  `scale` (a Python float) multiplies q here rather than outside, so bf16 q is not rounded twice.
  """
  mm, mm_tn, mm_nt = dots(prec)
  q_CK = q_CK * scale
  gam_CC, gamma_C1, gl_11 = _decays(gc_C1, gr_1C)
  _, _, w_CK, u_CV = _wu(x_CC, k_CK, v_CV, beta_C1, gamma_C1, prec)
  vn_CV = u_CV - mm(w_CK, s_KV)
  p_CC = mm_nt(q_CK, k_CK) * gam_CC
  o_CV = gamma_C1 * mm(q_CK, s_KV) + mm(p_CC, vn_CV)
  kd_CK = k_CK * jnp.exp(gl_11 - gc_C1)
  s_KV = jnp.exp(gl_11) * s_KV + mm_tn(kd_CK, vn_CV)
  return o_CV, s_KV


def chunk_backward(q_CK, k_CK, v_CV, beta_C1, gc_C1, gr_1C, x_CC, s_KV, do_CV, ds_KV, scale,
                   prec=HIGHEST):
  """Reverse of chunk_forward. ds_KV is the cotangent of the state leaving the chunk.

  Returns dq, dk, dv, dbeta_C1, dgc as a column part [C,1] plus a row part [1,C] (their sum,
  transposed, is the gradient of gc; adding them is left to the caller), and the cotangent of
  the state entering the chunk.
  """
  C = q_CK.shape[0]
  mm, mm_tn, mm_nt = dots(prec)
  q_CK = q_CK * scale
  gam_CC, gamma_C1, gl_11 = _decays(gc_C1, gr_1C)
  kb_CK, vb_CV, w_CK, u_CV = _wu(x_CC, k_CK, v_CV, beta_C1, gamma_C1, prec)
  vn_CV = u_CV - mm(w_CK, s_KV)
  qk_CC = mm_nt(q_CK, k_CK)
  p_CC = qk_CC * gam_CC
  qs_CV = gamma_C1 * mm(q_CK, s_KV)
  dec_C1 = jnp.exp(gl_11 - gc_C1)
  kd_CK = k_CK * dec_C1
  glast_C1 = lax.broadcasted_iota(jnp.int32, (C, 1), 0) == C - 1

  # state update  S' = exp(gl) S + Kd^T Vn   and output  O = gamma Q S + P Vn
  dvn_CV = mm_tn(p_CC, do_CV) + mm(kd_CK, ds_KV)
  dp_CC = mm_nt(do_CV, vn_CV)
  dqk_CC = dp_CC * gam_CC
  vds_CK = mm_nt(vn_CV, ds_KV)
  dq_CK = (mm(dqk_CC, k_CK) + gamma_C1 * mm_nt(do_CV, s_KV)) * scale
  dk_CK = mm_tn(dqk_CC, q_CK) + dec_C1 * vds_CK
  z_C1 = jnp.sum(kd_CK * vds_CK, axis=1, keepdims=True)
  zp_CC = dp_CC * p_CC
  dgc_C1 = (jnp.sum(do_CV * qs_CV, axis=1, keepdims=True)
            + jnp.sum(zp_CC, axis=1, keepdims=True) - z_C1)
  dgc_1C = -jnp.sum(zp_CC, axis=0, keepdims=True)
  dgl_11 = jnp.sum(jnp.sum(ds_KV * s_KV, axis=1, keepdims=True), axis=0, keepdims=True)
  dgl_11 = jnp.exp(gl_11) * dgl_11 + jnp.sum(z_C1, axis=0, keepdims=True)
  dgc_C1 = dgc_C1 + jnp.where(glast_C1, dgl_11, 0.0)
  ds_prev_KV = (jnp.exp(gl_11) * ds_KV + mm_tn(q_CK * gamma_C1, do_CV) - mm_tn(w_CK, dvn_CV))

  # Vn = U - W S,  W = T Kb,  U = T Vb,  T = X^T
  dw_CK = -mm_nt(dvn_CV, s_KV)
  dkb_CK = mm(x_CC, dw_CK)
  dvb_CV = mm(x_CC, dvn_CV)
  dt_CC = mm_nt(dw_CK, kb_CK) + mm_nt(dvn_CV, vb_CV)
  # T = (I + A)^-1  =>  dA = -T^T dT T^T = -X dT X on the strict lower triangle
  r_CC, c_CC = _iotas(C)
  da_CC = jnp.where(r_CC > c_CC, -mm(mm(x_CC, dt_CC), x_CC), 0.0)
  dag_CC = da_CC * gam_CC
  bdag_CC = beta_C1 * dag_CC
  dk_CK = dk_CK + mm(bdag_CC, k_CK) + mm_tn(bdag_CC, k_CK) + dkb_CK * (beta_C1 * gamma_C1)
  dv_CV = dvb_CV * beta_C1
  kk_CC = mm_nt(k_CK, k_CK)
  dbeta_C1 = (jnp.sum(dag_CC * kk_CC, axis=1, keepdims=True)
              + jnp.sum(dkb_CK * k_CK, axis=1, keepdims=True) * gamma_C1
              + jnp.sum(dvb_CV * v_CV, axis=1, keepdims=True))
  za_CC = bdag_CC * kk_CC  # = dA * A
  dgc_C1 = (dgc_C1 + jnp.sum(za_CC, axis=1, keepdims=True)
            + jnp.sum(dkb_CK * kb_CK, axis=1, keepdims=True))
  dgc_1C = dgc_1C - jnp.sum(za_CC, axis=0, keepdims=True)
  return dq_CK, dk_CK, dv_CV, dbeta_C1, dgc_C1, dgc_1C, ds_prev_KV
