// Fused softmax attention for CPUs, forward and backward, called from JAX through XLA's FFI.
// Built and registered by cpu.py (g++ -O3 -march=native -ffast-math); the math is
// FlashAttention-2's: the forward keeps only o and the row log-sum-exp, the backward recomputes P.
//
// Why: at short lengths XLA:CPU runs attention as ~20 small ops per layer (batched dots on
// [B,H,T,D] copies of [B,T,H,D] tensors, softmax passes, transposes). Here one task per
// (batch, kv head) reads q/k/v in place, keeps a row of logits in registers/L1, and the two
// CPU threads XLA lends us split the tasks.
//
// Layout: q, o, dq [B,T,H,D]; k, v, dk, dv [B,S,K,D] with H = K*G (query head h uses kv head
// h / G); lse [B,H,T]. float32 only; D is a template parameter (8, 16, 32, 64 or 128).
// Masks: causal aligned bottom-right (query t sees keys j <= t + S - T) or none.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// GCC vector extensions: 8 floats (one AVX register; two SSE registers elsewhere).
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
inline v8 ld(const float* p) { return *reinterpret_cast<const v8u*>(p); }
inline void st(float* p, v8 x) { *reinterpret_cast<v8u*>(p) = x; }
inline v8 bc(float x) { return (v8){} + x; }

// Runs f(0..n) on the calling thread and the helpers of XLA's intra-op pool. A helper that starts
// late finds nothing left and returns; the caller waits only for tasks already claimed.
template <class F>
void parallel_for(ffi::ThreadPool& pool, int64_t n, F f) {
  const int64_t workers = std::min<int64_t>(pool.num_threads(), n);
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  struct State { std::atomic<int64_t> next{0}, done{0}; };
  auto state = std::make_shared<State>();
  auto work = [state, n, f]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      f(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t w = 1; w < workers; ++w) pool.Schedule(decltype(work)(work));
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

struct Dims { int64_t B, T, H, S, K, D; };

// Keys padded to a multiple of 16: rows of the transposed keys stay cache-line aligned.
inline int64_t padded(int64_t S) { return (S + 15) / 16 * 16; }

inline int64_t n_visible(int64_t t, const Dims& d, bool causal) {
  return causal ? std::clamp<int64_t>(t + (d.S - d.T) + 1, 0, d.S) : d.S;
}

// s[0..8*NJ) = a . xt[:, 0..8*NJ) for xt [D][Sp]: NJ vectors of keys stay in registers.
template <int D, int NJ>
inline void row_dot_block(const float* a, const float* xt, int64_t Sp, float* s) {
  if constexpr (NJ <= 4) {   // few accumulators: two sets (even/odd c) hide the FMA latency
    v8 acc[NJ] = {}, acc2[NJ] = {};
    for (int c = 0; c < D; c += 2) {
      const v8 a0 = bc(a[c]), a1 = bc(a[c + 1]);
      const float *x0 = xt + c * Sp, *x1 = x0 + Sp;
      for (int u = 0; u < NJ; ++u) {
        acc[u] += a0 * ld(x0 + 8 * u);
        acc2[u] += a1 * ld(x1 + 8 * u);
      }
    }
    for (int u = 0; u < NJ; ++u) st(s + 8 * u, acc[u] + acc2[u]);
  } else {
    v8 acc[NJ] = {};
    for (int c = 0; c < D; ++c) {
      const v8 ac = bc(a[c]);
      const float* x = xt + c * Sp;
      for (int u = 0; u < NJ; ++u) acc[u] += ac * ld(x + 8 * u);
    }
    for (int u = 0; u < NJ; ++u) st(s + 8 * u, acc[u]);
  }
}

// s[j] = a . xt[:, j] for j < n (written up to the next multiple of 8), 64 keys at a time.
template <int D>
void row_dot(const float* a, const float* xt, int64_t Sp, int64_t n, float* s) {
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    const float* x = xt + j0;
    float* out = s + j0;
    switch (std::min<int64_t>(8, (n - j0 + 7) / 8)) {
      case 1: row_dot_block<D, 1>(a, x, Sp, out); break;
      case 2: row_dot_block<D, 2>(a, x, Sp, out); break;
      case 3: row_dot_block<D, 3>(a, x, Sp, out); break;
      case 4: row_dot_block<D, 4>(a, x, Sp, out); break;
      case 5: row_dot_block<D, 5>(a, x, Sp, out); break;
      case 6: row_dot_block<D, 6>(a, x, Sp, out); break;
      case 7: row_dot_block<D, 7>(a, x, Sp, out); break;
      default: row_dot_block<D, 8>(a, x, Sp, out); break;
    }
  }
}

// out[0..D) = sum_{j<n} w[j] * rows[j*D..], two accumulator sets (even/odd j).
template <int D>
inline void weighted_rows(const float* w, const float* rows, int64_t n, v8 (&out)[D / 8]) {
  constexpr int NV = D / 8;
  v8 acc[NV] = {}, acc2[NV] = {};
  int64_t j = 0;
  for (; j + 1 < n; j += 2) {
    const v8 w0 = bc(w[j]), w1 = bc(w[j + 1]);
    const float* r = rows + j * D;
    for (int u = 0; u < NV; ++u) {
      acc[u] += w0 * ld(r + 8 * u);
      acc2[u] += w1 * ld(r + D + 8 * u);
    }
  }
  if (j < n) {
    const v8 w0 = bc(w[j]);
    for (int u = 0; u < NV; ++u) acc[u] += w0 * ld(rows + j * D + 8 * u);
  }
  for (int u = 0; u < NV; ++u) out[u] = acc[u] + acc2[u];
}

// Per-thread scratch that only grows: no allocation per task or call. 64-byte aligned (a cache
// line), and carved into arrays whose sizes are multiples of 16 floats, so that no vector load
// straddles two lines.
float* scratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n + 16) buf.resize(n + 16);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t{63});
}

// acc[j] += sum_{r<rows} w[r*Sp + j] * x[r] (rows of D) for j < n, two keys at a time so that
// each x[r] is loaded once for both.
template <int D>
inline void add_outer(const float* w, int64_t Sp, const float* x, int rows, int64_t n, float* acc) {
  constexpr int NV = D / 8;
  for (int64_t j = 0; j < n; j += 2) {
    const bool pair = j + 1 < n;
    v8 a0[NV] = {}, a1[NV] = {};
    for (int r = 0; r < rows; ++r) {
      const v8 w0 = bc(w[r * Sp + j]), w1 = bc(pair ? w[r * Sp + j + 1] : 0.f);
      for (int u = 0; u < NV; ++u) {
        const v8 xv = ld(x + r * D + 8 * u);
        a0[u] += w0 * xv;
        a1[u] += w1 * xv;
      }
    }
    float *acc0 = acc + j * D, *acc1 = acc0 + D;
    for (int u = 0; u < NV; ++u) st(acc0 + 8 * u, ld(acc0 + 8 * u) + a0[u]);
    if (pair)
      for (int u = 0; u < NV; ++u) st(acc1 + 8 * u, ld(acc1 + 8 * u) + a1[u]);
  }
}

// In-register transpose of an 8x8 tile: r[i][k] becomes r[k][i].
inline void transpose8(v8 (&r)[8]) {
  typedef int v8i __attribute__((vector_size(32)));
  v8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {   // interleave row pairs
    t[i] = __builtin_shuffle(r[i], r[i + 1], (v8i){0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], (v8i){2, 10, 3, 11, 6, 14, 7, 15});
  }
  const v8i lo = {0, 1, 8, 9, 4, 5, 12, 13}, hi = {2, 3, 10, 11, 6, 7, 14, 15};
  for (int i = 0; i < 8; i += 4)     // u[i + 2k], u[i + 2k + 1]: columns 2k, 2k + 1 (and + 4)
    for (int k = 0; k < 2; ++k) {
      u[i + 2 * k] = __builtin_shuffle(t[i + k], t[i + k + 2], lo);
      u[i + 2 * k + 1] = __builtin_shuffle(t[i + k], t[i + k + 2], hi);
    }
  for (int k = 0; k < 4; ++k) {      // join the 128-bit halves
    r[k] = __builtin_shuffle(u[k], u[k + 4], (v8i){0, 1, 2, 3, 8, 9, 10, 11});
    r[k + 4] = __builtin_shuffle(u[k], u[k + 4], (v8i){4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// This (batch, kv head)'s rows of X, transposed to xt [D][Sp] (Sp = padded(S)) and/or
// copied contiguous to rows [S][D]; either may be nullptr.
template <int D>
void gather_kv(const float* X, const Dims& d, int64_t b, int64_t kh, float* xt, float* rows) {
  const int64_t Sp = padded(d.S);
  auto x = [&](int64_t j) { return X + ((b * d.S + j) * d.K + kh) * D; };
  if (rows)
    for (int64_t j = 0; j < d.S; ++j) std::memcpy(rows + j * D, x(j), D * sizeof(float));
  if (!xt) return;
  int64_t j0 = 0;
  for (; j0 + 8 <= d.S; j0 += 8)   // 8x8 tiles through registers
    for (int c0 = 0; c0 < D; c0 += 8) {
      v8 r[8];
      for (int i = 0; i < 8; ++i) r[i] = ld(x(j0 + i) + c0);
      transpose8(r);
      for (int i = 0; i < 8; ++i) st(xt + (c0 + i) * Sp + j0, r[i]);
    }
  for (int64_t j = j0; j < d.S; ++j)
    for (int c = 0; c < D; ++c) xt[c * Sp + j] = x(j)[c];
  // padding keys: read by the last vector of a row, never used; keep them finite
  for (int c = 0; c < D; ++c) std::fill(xt + c * Sp + d.S, xt + (c + 1) * Sp, 0.f);
}

template <int D>
void fwd_task(const Dims& d, int64_t b, int64_t kh, float scale, bool causal, const float* Q,
              const float* K, const float* V, float* O, float* L) {
  constexpr int NV = D / 8;
  const int64_t S = d.S, Sp = padded(S), G = d.H / d.K;
  float* kt = scratch(2 * D * Sp + Sp);   // sizes multiples of 16: see scratch()
  float *vv = kt + D * Sp, *s = vv + Sp * D;
  gather_kv<D>(K, d, b, kh, kt, nullptr);
  gather_kv<D>(V, d, b, kh, nullptr, vv);
  alignas(64) float qs[D];
  for (int64_t h = kh * G; h < (kh + 1) * G; ++h) {
    for (int64_t t = 0; t < d.T; ++t) {
      const int64_t n = n_visible(t, d, causal), row = ((b * d.T + t) * d.H + h) * D;
      float* lse = L + (b * d.H + h) * d.T + t;
      if (n == 0) {   // sees no key: o = 0 (lse is never read for such rows)
        std::fill(O + row, O + row + D, 0.f);
        *lse = 0.f;
        continue;
      }
      for (int c = 0; c < D; ++c) qs[c] = Q[row + c] * scale;
      row_dot<D>(qs, kt, Sp, n, s);
      float m = s[0];
      for (int64_t j = 1; j < n; ++j) m = std::max(m, s[j]);
      float l = 0.f;
      for (int64_t j = 0; j < n; ++j) {
        s[j] = expf(s[j] - m);
        l += s[j];
      }
      v8 o[NV];
      weighted_rows<D>(s, vv, n, o);
      const v8 inv = bc(1.f / l);
      for (int u = 0; u < NV; ++u) st(O + row + 8 * u, o[u] * inv);
      *lse = m + logf(l);
    }
  }
}

template <int D>
void bwd_task(const Dims& d, int64_t b, int64_t kh, float scale, bool causal, const float* Q,
              const float* K, const float* V, const float* O, const float* L, const float* DO,
              float* DQ, float* DK, float* DV) {
  constexpr int NV = D / 8, TB = 16;   // rows per block: dK, dV are read and written once a block
  const int64_t S = d.S, Sp = padded(S), G = d.H / d.K;
  float* kt = scratch(5 * D * Sp + 2 * TB * Sp + 2 * TB * D);   // sizes multiples of 16
  float *vt = kt + D * Sp, *kk = vt + D * Sp, *dka = kk + Sp * D, *dva = dka + Sp * D,
        *p = dva + Sp * D, *ds = p + TB * Sp, *qb = ds + TB * Sp, *db = qb + TB * D;
  std::fill(dka, dka + 2 * Sp * D, 0.f);   // dka and dva
  gather_kv<D>(K, d, b, kh, kt, kk);
  gather_kv<D>(V, d, b, kh, vt, nullptr);
  alignas(64) float qs[D];
  for (int64_t h = kh * G; h < (kh + 1) * G; ++h) {
    for (int64_t t0 = 0; t0 < d.T; t0 += TB) {
      const int rows = std::min<int64_t>(TB, d.T - t0);
      const int64_t nmax = n_visible(t0 + rows - 1, d, causal);
      // Per row: P and dS = P * (dP - rowsum(dO * O)) * scale, and dQ = dS K.
      for (int r = 0; r < rows; ++r) {
        const int64_t t = t0 + r, n = n_visible(t, d, causal), row = ((b * d.T + t) * d.H + h) * D;
        const float *qt = Q + row, *ot = O + row, *dot = DO + row;
        float *pr = p + r * Sp, *dsr = ds + r * Sp;
        std::memcpy(qb + r * D, qt, D * sizeof(float));
        std::memcpy(db + r * D, dot, D * sizeof(float));
        if (n > 0) {
          for (int c = 0; c < D; ++c) qs[c] = qt[c] * scale;
          v8 di = {};
          for (int u = 0; u < NV; ++u) di += ld(dot + 8 * u) * ld(ot + 8 * u);
          float delta = 0.f;
          for (int i = 0; i < 8; ++i) delta += di[i];
          row_dot<D>(qs, kt, Sp, n, pr);
          row_dot<D>(dot, vt, Sp, n, dsr);
          const float lse = L[(b * d.H + h) * d.T + t];
          for (int64_t j = 0; j < n; ++j) {
            const float pj = expf(pr[j] - lse);
            pr[j] = pj;
            dsr[j] = pj * (dsr[j] - delta) * scale;
          }
        }
        std::fill(pr + n, pr + nmax, 0.f);   // keys this row does not see, up to the block's last
        std::fill(dsr + n, dsr + nmax, 0.f);
        v8 dq[NV];
        weighted_rows<D>(dsr, kk, n, dq);
        for (int u = 0; u < NV; ++u) st(DQ + row + 8 * u, dq[u]);
      }
      add_outer<D>(ds, Sp, qb, rows, nmax, dka);   // dK_j += sum_r dS[r,j] q_r
      add_outer<D>(p, Sp, db, rows, nmax, dva);    // dV_j += sum_r P[r,j] dO_r
    }
  }
  for (int64_t j = 0; j < S; ++j) {
    std::memcpy(DK + ((b * S + j) * d.K + kh) * D, dka + j * D, D * sizeof(float));
    std::memcpy(DV + ((b * S + j) * d.K + kh) * D, dva + j * D, D * sizeof(float));
  }
}

using F32 = ffi::Buffer<ffi::F32>;
using OutF32 = ffi::ResultBuffer<ffi::F32>;

// Shapes are checked in cpu.py before tracing; these checks guard direct FFI callers.
ffi::Error dims_of(const F32& q, const F32& k, Dims& d) {
  auto qd = q.dimensions();
  auto kd = k.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || qd[0] != kd[0] || qd[3] != kd[3] || kd[2] == 0 ||
      qd[2] % kd[2] != 0)
    return ffi::Error::InvalidArgument(
        "seqzoo cpu attention: want q [B,T,H,D], k/v [B,S,K,D] with K | H");
  d = Dims{qd[0], qd[1], qd[2], kd[1], kd[2], qd[3]};
  return ffi::Error::Success();
}

#define SEQZOO_FOR_HEAD_DIM(D_, CALL)                                                          \
  switch (D_) {                                                                                \
    case 8: { constexpr int D = 8; CALL; } break;                                              \
    case 16: { constexpr int D = 16; CALL; } break;                                            \
    case 32: { constexpr int D = 32; CALL; } break;                                            \
    case 64: { constexpr int D = 64; CALL; } break;                                            \
    case 128: { constexpr int D = 128; CALL; } break;                                          \
    default: return ffi::Error::InvalidArgument("seqzoo cpu attention: head_dim not in 8..128"); \
  }

ffi::Error Fwd(ffi::ThreadPool pool, F32 q, F32 k, F32 v, OutF32 o, OutF32 lse, float scale,
               bool causal) {
  Dims dd;
  if (ffi::Error e = dims_of(q, k, dd); e.failure()) return e;
  const float *Q = q.typed_data(), *K = k.typed_data(), *V = v.typed_data();
  float *O = o->typed_data(), *L = lse->typed_data();
  SEQZOO_FOR_HEAD_DIM(dd.D, parallel_for(pool, dd.B * dd.K, [=](int64_t i) {
    fwd_task<D>(dd, i / dd.K, i % dd.K, scale, causal, Q, K, V, O, L);
  }));
  return ffi::Error::Success();
}

ffi::Error Bwd(ffi::ThreadPool pool, F32 q, F32 k, F32 v, F32 o, F32 lse, F32 dout, OutF32 dq,
               OutF32 dk, OutF32 dv, float scale, bool causal) {
  Dims dd;
  if (ffi::Error e = dims_of(q, k, dd); e.failure()) return e;
  const float *Q = q.typed_data(), *K = k.typed_data(), *V = v.typed_data(), *O = o.typed_data(),
              *L = lse.typed_data(), *DO = dout.typed_data();
  float *DQ = dq->typed_data(), *DK = dk->typed_data(), *DV = dv->typed_data();
  SEQZOO_FOR_HEAD_DIM(dd.D, parallel_for(pool, dd.B * dd.K, [=](int64_t i) {
    bwd_task<D>(dd, i / dd.K, i % dd.K, scale, causal, Q, K, V, O, L, DO, DQ, DK, DV);
  }));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(seqzoo_attention_fwd, Fwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>()
                                  .Attr<float>("scale").Attr<bool>("causal"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(seqzoo_attention_bwd, Bwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<float>("scale").Attr<bool>("causal"));
