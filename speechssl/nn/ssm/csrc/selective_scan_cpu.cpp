// Selective scan (Mamba's S6) on CPU: forward and backward, one pass over the sequence per block
// of W channels, with the state of every (channel, state) pair in registers/L1.
//
// Built on first use by speechssl/nn/ssm/scan_native.py (plain C++17, no torch or Python
// headers; called through ctypes, which releases the GIL, so Python threads run blocks in
// parallel). The math is the one of selective_scan_ref:
//
//   dt[t]   = softplus(delta[t] + bias)                 (bias and softplus optional)
//   h[t, n] = exp(dt[t] A[n]) h[t-1, n] + dt[t] u[t] B[t, n]
//   y[t]    = sum_n C[t, n] h[t, n]
//   out[t]  = (y[t] + D u[t]) * silu(z[t])              (D and z optional)
//
// Why blocks of W channels rather than one channel at a time: the loops over the W lanes
// vectorise (AVX2: 8 floats) with no horizontal sums in the forward pass, B[t, :] and C[t, :]
// are shared by the W lanes (one broadcast each), and exp() runs W-wide. exp, softplus and
// sigmoid are computed by the vectorisable polynomial versions below for float (relative error
// ~1 ulp of float on the ranges the scan uses); float64 uses the libm functions (tests).
//
// Layouts: u, delta, z, out and their gradients are (batch, dim, length), B and C (batch,
// groups_x, dstate, length), all with arbitrary strides (in elements); A is (dim, dstate)
// contiguous; channel d uses group d / (dim / groups_x).
// Blocks never straddle a group of B or C (the caller's `groups` is a common multiple).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

constexpr int W = 8;  // channels per block (one AVX2 register of floats)

// W lanes of T as a GCC/Clang vector: arithmetic, comparisons and ?: work lane-wise, and the
// compiler keeps these values in registers (plain arrays indexed in loops were kept in memory,
// and the store-to-load round trips made the loops ~4x slower).
template <typename T> struct VecOf;
template <> struct VecOf<float> {
  typedef float type __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t itype __attribute__((vector_size(W * sizeof(int32_t))));
};
template <> struct VecOf<double> {
  typedef double type __attribute__((vector_size(W * sizeof(double))));
  typedef int64_t itype __attribute__((vector_size(W * sizeof(int64_t))));
};
template <typename T> using Vec = typename VecOf<T>::type;

template <typename T> inline Vec<T> splat(T v) {
  Vec<T> r;
  for (int i = 0; i < W; ++i) r[i] = v;
  return r;
}

template <typename T> inline T hsum(Vec<T> v) {
  T s = T(0);
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
}

struct Args {
  int64_t batch, dim, length, dstate, groups_b, groups_c, groups;
  int64_t softplus, has_z, has_D, has_bias;
  int64_t span;  // blocks of W channels per work unit (see Unit)
  const void *u, *delta, *z, *A, *Bm, *Cm, *Dv, *bias;
  void *out, *last;   // last: (batch, dim, dstate) contiguous, may be null
  const void *dout;
  void *du, *ddelta, *dz;
  int64_t s_u[3], s_delta[3], s_z[3], s_out[3], s_dout[3], s_du[3], s_ddelta[3], s_dz[3];
  int64_t s_B[4], s_C[4];  // (batch, group, state, step) strides of Bm and Cm
};

// Per-thread outputs of the backward pass: gradients of the parameters shared by blocks
// (summed over threads by the caller), and the state history of the block being processed.
template <typename T>
struct Work {
  T *dA, *dD, *dbias;  // (dim, dstate), (dim,), (dim,)
  T *dB, *dC;          // (batch, groups_x, dstate, length), zeroed by the kernel
  T *hist;             // (span, length, dstate, W): states of the unit's blocks, recomputed
  T *dth, *xh;         // (span, length, W): step sizes and their pre-softplus arguments
};

// Lane-wise max/min that return x when x is NaN (so NaN propagates through the clamps below);
// one instruction with AVX, a compare and a blend otherwise.
inline Vec<float> vmax(float lo, Vec<float> x) {
#if defined(__AVX__)
  return _mm256_max_ps(splat(lo), x);  // returns the second operand when either is NaN
#else
  return x < lo ? splat(lo) : x;
#endif
}
inline Vec<float> vmin(float hi, Vec<float> x) {
#if defined(__AVX__)
  return _mm256_min_ps(splat(hi), x);
#else
  return x > hi ? splat(hi) : x;
#endif
}

// 2^x for float lanes without libm calls, so that the loops stay in registers: x = n + f with
// n the nearest integer and |f| <= 1/2, 2^f by a degree-6 polynomial (Taylor coefficients of
// exp(f ln 2); truncation error < 1.2e-8 relative), 2^n through the exponent bits. Arguments are
// clamped to [-126, 127] (results saturate at ~1.2e-38 and ~1.7e38 instead of 0 and inf).
// Rounding adds and subtracts 1.5 * 2^23 + 127: the float's low mantissa bits then hold n + 127,
// and shifting them by 23 gives the exponent field of 2^n directly. This needs exact IEEE
// arithmetic, which is why the build must not use -ffast-math.
inline Vec<float> vexp2(Vec<float> x) {
  typedef VecOf<float>::itype vi;
  x = vmin(127.0f, vmax(-126.0f, x));
  const Vec<float> shifted = x + 12583039.0f;  // 1.5 * 2^23 + 127
  const Vec<float> f = x - (shifted - 12583039.0f);
  Vec<float> p = splat(1.5403530393381606e-4f);  // (ln 2)^6 / 720
  p = p * f + 1.3333558146428443e-3f;             // (ln 2)^5 / 120
  p = p * f + 9.618129107628477e-3f;              // (ln 2)^4 / 24
  p = p * f + 5.550410866482158e-2f;              // (ln 2)^3 / 6
  p = p * f + 2.402265069591007e-1f;              // (ln 2)^2 / 2
  p = p * f + 6.931471805599453e-1f;              // ln 2
  p = p * f + 1.0f;
  return p * (Vec<float>)((vi)shifted << 23);     // vector casts reinterpret the bits
}

constexpr double kLog2e = 1.4426950408889634;

inline Vec<float> vexp(Vec<float> x) { return vexp2(x * float(kLog2e)); }

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), with log1p(e) = 2 atanh(e / (2 + e)) summed as
// a series in s = e / (2 + e) <= 1/3 (8 terms: < 4e-8 relative), accurate for tiny e as well.
inline Vec<float> vsoftplus(Vec<float> x) {
  const Vec<float> e = vexp(x < 0.0f ? x : -x);
  const Vec<float> s = e / (2.0f + e);
  const Vec<float> s2 = s * s;
  Vec<float> p = splat(1.0f / 15.0f);
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return (x > 0.0f ? x : splat(0.0f)) + 2.0f * s * p;
}

inline Vec<float> vsigmoid(Vec<float> x) { return 1.0f / (1.0f + vexp(-x)); }

// float64 (tests, gradcheck): libm, lane by lane.
inline Vec<double> vexp2(Vec<double> x) {
  for (int i = 0; i < W; ++i) x[i] = std::exp2(x[i]);
  return x;
}
inline Vec<double> vexp(Vec<double> x) {
  for (int i = 0; i < W; ++i) x[i] = std::exp(x[i]);
  return x;
}
inline Vec<double> vsoftplus(Vec<double> x) {
  for (int i = 0; i < W; ++i) x[i] = x[i] > 20.0 ? x[i] : std::log1p(std::exp(x[i]));
  return x;
}
inline Vec<double> vsigmoid(Vec<double> x) {
  for (int i = 0; i < W; ++i) x[i] = 1.0 / (1.0 + std::exp(-x[i]));
  return x;
}

inline int64_t at(const int64_t* s, int64_t b, int64_t d, int64_t t) { return b * s[0] + d * s[1] + t * s[2]; }

struct Block {
  int64_t b, d0, lanes, gb, gc;
};

// A work unit: `span` consecutive blocks of W channels of one batch item and group, scanned
// together tile by tile. Why: with time-major inputs one block reads 32 bytes per step from
// each input, half a cache line, at a stride of D numbers; the unit's blocks read whole lines
// at once while they are in cache (one block at a time spent most of its time waiting on memory).
struct Unit {
  std::vector<Block> blocks;
};

Unit unit_of(const Args& a, int64_t j) {
  const int64_t dg = a.dim / a.groups;
  const int64_t width = W * a.span;
  const int64_t per_group = (dg + width - 1) / width;
  const int64_t b = j / (a.groups * per_group);
  const int64_t rem = j % (a.groups * per_group);
  const int64_t g = rem / per_group, i = rem % per_group;
  const int64_t end = g * dg + (i * width + width < dg ? i * width + width : dg);
  Unit u;
  for (int64_t d0 = g * dg + i * width; d0 < end; d0 += W) {
    const int64_t lanes = end - d0 < W ? end - d0 : W;
    u.blocks.push_back({b, d0, lanes, d0 / (a.dim / a.groups_b), d0 / (a.dim / a.groups_c)});
  }
  return u;
}

int64_t n_units(const Args& a) {
  const int64_t dg = a.dim / a.groups;
  const int64_t width = W * a.span;
  return a.batch * a.groups * ((dg + width - 1) / width);
}

// Steps are processed in tiles: first everything that does not depend on the previous step
// (gathering the lanes, step sizes, gates) for the whole tile, then the recurrence, then the
// outputs. Doing the elementwise work per step inside the recurrence left its long dependency
// chains (softplus: exp, a division, a polynomial) exposed on every step.
constexpr int kTile = 64;

template <typename T>
struct Tile {
  Vec<T> u[kTile], x[kTile], dt[kTile], g[kTile], y[kTile];
};

#if defined(__AVX__)
// In-register transpose of 8 rows of 8 floats (unpack, shuffle, swap 128-bit halves).
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

// Lanes of steps [t0, t0 + nt) of a strided (batch, dim, length) tensor into tile[0 .. nt).
// Padding lanes repeat the last channel so that they stay finite (their results are never stored).
template <typename T>
inline void gather(Vec<T>* tile, const void* src, const int64_t* s, const Block& k, int64_t t0, int nt) {
  const T* p = static_cast<const T*>(src) + k.b * s[0] + k.d0 * s[1] + t0 * s[2];
  if (k.lanes == W && s[1] == 1) {  // time-major memory: one vector load per step
    for (int tt = 0; tt < nt; ++tt) std::memcpy(&tile[tt], p + tt * s[2], sizeof(Vec<T>));
    return;
  }
  int done = 0;
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    if (k.lanes == W && s[2] == 1) {  // channel-major rows: 8 x 8 blocks through registers
      for (; done + 8 <= nt; done += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(p + i * s[1] + done);
        transpose8(r);
        for (int j = 0; j < 8; ++j) tile[done + j] = r[j];
      }
    }
  }
#endif
  for (int i = 0; i < W; ++i) {
    const T* row = p + (i < k.lanes ? i : k.lanes - 1) * s[1];
    for (int tt = done; tt < nt; ++tt) tile[tt][i] = row[tt * s[2]];
  }
}

template <typename T>
inline void scatter(void* dst, const int64_t* s, const Block& k, int64_t t0, int nt, const Vec<T>* tile) {
  T* p = static_cast<T*>(dst) + k.b * s[0] + k.d0 * s[1] + t0 * s[2];
  if (k.lanes == W && s[1] == 1) {
    for (int tt = 0; tt < nt; ++tt) std::memcpy(p + tt * s[2], &tile[tt], sizeof(Vec<T>));
    return;
  }
  int done = 0;
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    if (k.lanes == W && s[2] == 1) {
      for (; done + 8 <= nt; done += 8) {
        __m256 r[8];
        for (int j = 0; j < 8; ++j) r[j] = tile[done + j];
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(p + i * s[1] + done, r[i]);
      }
    }
  }
#endif
  for (int i = 0; i < k.lanes; ++i) {
    T* row = p + i * s[1];
    for (int tt = done; tt < nt; ++tt) row[tt * s[2]] = tile[tt][i];
  }
}

// Per-block constants: A as dstate vectors of lanes, D and the step-size bias.
template <typename T>
struct Params {
  std::vector<Vec<T>> A, A2;  // A, and A * log2(e) for exp2
  Vec<T> D, bias;

  Params(const Args& a, const Block& k) : A(a.dstate), A2(a.dstate) {
    const T* Am = static_cast<const T*>(a.A);
    for (int i = 0; i < W; ++i) {
      const int64_t d = k.d0 + (i < k.lanes ? i : k.lanes - 1);
      for (int64_t n = 0; n < a.dstate; ++n) A[n][i] = Am[d * a.dstate + n];
      D[i] = a.has_D ? static_cast<const T*>(a.Dv)[d] : T(0);
      bias[i] = a.has_bias ? static_cast<const T*>(a.bias)[d] : T(0);
    }
    for (int64_t n = 0; n < a.dstate; ++n) A2[n] = A[n] * T(kLog2e);
  }
};

// Tile prologue: u, x = delta + bias, dt = softplus(x) and (with z) g = z, for steps [t0, t0 + nt).
template <typename T>
void load_tile(const Args& a, const Block& k, const Params<T>& q, int64_t t0, int nt, Tile<T>& tl) {
  gather<T>(tl.u, a.u, a.s_u, k, t0, nt);
  gather<T>(tl.x, a.delta, a.s_delta, k, t0, nt);
  for (int tt = 0; tt < nt; ++tt) {
    tl.x[tt] += q.bias;
    tl.dt[tt] = a.softplus ? vsoftplus(tl.x[tt]) : tl.x[tt];
  }
  if (a.has_z) gather<T>(tl.g, a.z, a.s_z, k, t0, nt);
}

// Forward over one unit. With `hist` (backward pass), states, step sizes and pre-softplus
// values are recorded instead of writing outputs.
template <typename T>
void forward_unit(const Args& a, const Unit& un, T* hist, T* dth, T* xh) {
  const int64_t N = a.dstate, L = a.length;
  const size_t nb = un.blocks.size();
  std::vector<Params<T>> qs;
  for (const Block& k : un.blocks) qs.emplace_back(a, k);
  std::vector<Vec<T>> states(nb * N, splat(T(0)));
  std::vector<Tile<T>> tile_buf(1);
  Tile<T>& tl = tile_buf[0];
  for (int64_t t0 = 0; t0 < L; t0 += kTile) {
    const int nt = static_cast<int>(L - t0 < kTile ? L - t0 : kTile);
    for (size_t s = 0; s < nb; ++s) {
      const Block& k = un.blocks[s];
      const Params<T>& q = qs[s];
      Vec<T>* h = states.data() + s * N;
      const T* Bp = static_cast<const T*>(a.Bm) + k.b * a.s_B[0] + k.gb * a.s_B[1];
      const T* Cp = static_cast<const T*>(a.Cm) + k.b * a.s_C[0] + k.gc * a.s_C[1];
      const int64_t bn = a.s_B[2], bt_ = a.s_B[3], cn = a.s_C[2], ct_ = a.s_C[3];
      load_tile(a, k, q, t0, nt, tl);
      if (hist) {
        Vec<T>* hs = reinterpret_cast<Vec<T>*>(hist) + s * L * N;
        for (int tt = 0; tt < nt; ++tt) {
          const int64_t t = t0 + tt;
          const Vec<T> dt = tl.dt[tt], p = dt * tl.u[tt];
          const T* bt = Bp + t * bt_;
          Vec<T>* ht = hs + t * N;
          for (int64_t n = 0; n < N; ++n) {
            h[n] = vexp2(dt * q.A2[n]) * h[n] + p * bt[n * bn];
            ht[n] = h[n];
          }
          reinterpret_cast<Vec<T>*>(dth)[s * L + t] = dt;
          reinterpret_cast<Vec<T>*>(xh)[s * L + t] = tl.x[tt];
        }
        continue;
      }
      for (int tt = 0; tt < nt; ++tt) {
        const int64_t t = t0 + tt;
        const Vec<T> dt = tl.dt[tt], p = dt * tl.u[tt];
        const T* bt = Bp + t * bt_;
        const T* ct = Cp + t * ct_;
        Vec<T> y = q.D * tl.u[tt];
        for (int64_t n = 0; n < N; ++n) {
          h[n] = vexp2(dt * q.A2[n]) * h[n] + p * bt[n * bn];
          y += h[n] * ct[n * cn];
        }
        tl.y[tt] = y;
      }
      if (a.has_z)
        for (int tt = 0; tt < nt; ++tt) tl.y[tt] *= tl.g[tt] * vsigmoid(tl.g[tt]);
      scatter<T>(a.out, a.s_out, k, t0, nt, tl.y);
    }
  }
  if (a.last && !hist) {
    T* last = static_cast<T*>(a.last);
    for (size_t s = 0; s < nb; ++s) {
      const Block& k = un.blocks[s];
      for (int i = 0; i < k.lanes; ++i)
        for (int64_t n = 0; n < N; ++n) last[(k.b * a.dim + k.d0 + i) * N + n] = states[s * N + n][i];
    }
  }
}

// Backward over one unit: recompute and record the states, then run the adjoint recurrence
// lambda[t] = dy[t] C[t] + exp(dt[t+1] A) lambda[t+1] from the end, a tile at a time.
template <typename T>
void backward_unit(const Args& a, const Unit& un, const Work<T>& w) {
  const int64_t N = a.dstate, L = a.length;
  const size_t nb = un.blocks.size();
  forward_unit(a, un, w.hist, w.dth, w.xh);
  std::vector<Params<T>> qs;
  for (const Block& k : un.blocks) qs.emplace_back(a, k);
  std::vector<Vec<T>> lams(nb * N, splat(T(0))), dAs(nb * N, splat(T(0)));
  std::vector<Vec<T>> dDs(nb, splat(T(0))), dbiases(nb, splat(T(0))), lives(nb, splat(T(0)));
  for (size_t s = 0; s < nb; ++s)  // 1 on a block's lanes, 0 on padding: no adjoint, no gradient
    for (int i = 0; i < un.blocks[s].lanes; ++i) lives[s][i] = T(1);
  std::vector<Tile<T>> tile_buf(1);
  Tile<T>& tl = tile_buf[0];  // u, g (incoming gradient, then dy), y (dz), x (du), dt (z, then d dt)
  for (int64_t t0 = (L - 1) / kTile * kTile; t0 >= 0; t0 -= kTile) {
    const int nt = static_cast<int>(L - t0 < kTile ? L - t0 : kTile);
    for (size_t s = 0; s < nb; ++s) {
      const Block& k = un.blocks[s];
      const Params<T>& q = qs[s];
      Vec<T>* lam = lams.data() + s * N;
      Vec<T>* dA = dAs.data() + s * N;
      const T* Bp = static_cast<const T*>(a.Bm) + k.b * a.s_B[0] + k.gb * a.s_B[1];
      const T* Cp = static_cast<const T*>(a.Cm) + k.b * a.s_C[0] + k.gc * a.s_C[1];
      const int64_t bn = a.s_B[2], bt_ = a.s_B[3], cn = a.s_C[2], ct_ = a.s_C[3];
      T* dBp = w.dB + (k.b * a.groups_b + k.gb) * N * L;  // (dstate, length) of this (batch, group)
      T* dCp = w.dC + (k.b * a.groups_c + k.gc) * N * L;
      const Vec<T>* hist = reinterpret_cast<const Vec<T>*>(w.hist) + s * L * N;
      const Vec<T>* dth = reinterpret_cast<const Vec<T>*>(w.dth) + s * L;
      const Vec<T>* xh = reinterpret_cast<const Vec<T>*>(w.xh) + s * L;
      gather<T>(tl.u, a.u, a.s_u, k, t0, nt);
      gather<T>(tl.g, a.dout, a.s_dout, k, t0, nt);
      for (int tt = 0; tt < nt; ++tt) tl.g[tt] *= lives[s];
      if (a.has_z) {
        // out = (y + D u) * silu(z): dy = g silu(z), dz = g (y + D u) silu'(z)
        gather<T>(tl.dt, a.z, a.s_z, k, t0, nt);
        for (int tt = 0; tt < nt; ++tt) {
          const Vec<T>* h = hist + (t0 + tt) * N;
          const T* ct = Cp + (t0 + tt) * ct_;
          Vec<T> y = q.D * tl.u[tt];
          for (int64_t n = 0; n < N; ++n) y += h[n] * ct[n * cn];
          const Vec<T> z = tl.dt[tt], sg = vsigmoid(z);
          tl.y[tt] = tl.g[tt] * y * sg * (T(1) + z * (T(1) - sg));
          tl.g[tt] *= z * sg;
        }
        scatter<T>(a.dz, a.s_dz, k, t0, nt, tl.y);
      }
      for (int tt = nt - 1; tt >= 0; --tt) {
        const int64_t t = t0 + tt;
        const Vec<T>* h = hist + t * N;
        const Vec<T>* hp = t > 0 ? hist + (t - 1) * N : nullptr;
        const Vec<T> dt = dth[t], uu = tl.u[tt], gy = tl.g[tt], p = dt * uu;
        const T* bt = Bp + t * bt_;
        const T* ct = Cp + t * ct_;
        Vec<T> dp = splat(T(0)), ddt = splat(T(0));
        for (int64_t n = 0; n < N; ++n) {
          const Vec<T> l = lam[n] + gy * ct[n * cn];
          dCp[n * L + t] += hsum<T>(gy * h[n]);
          dBp[n * L + t] += hsum<T>(l * p);
          dp += l * bt[n * bn];
          const Vec<T> e = vexp2(dt * q.A2[n]);
          if (hp) {
            const Vec<T> wdec = l * e * hp[n];  // gradient of the log-decay dt * A at step t
            ddt += wdec * q.A[n];
            dA[n] += wdec * dt;
          }
          lam[n] = l * e;
        }
        dDs[s] += gy * uu;
        tl.x[tt] = dp * dt + gy * q.D;  // du
        tl.dt[tt] = ddt + dp * uu;      // d dt
      }
      for (int tt = 0; tt < nt; ++tt) {
        if (a.softplus) tl.dt[tt] *= vsigmoid(xh[t0 + tt]);
        dbiases[s] += tl.dt[tt];
      }
      scatter<T>(a.du, a.s_du, k, t0, nt, tl.x);
      scatter<T>(a.ddelta, a.s_ddelta, k, t0, nt, tl.dt);
    }
  }
  for (size_t s = 0; s < nb; ++s) {
    const Block& k = un.blocks[s];
    for (int i = 0; i < k.lanes; ++i) {
      const int64_t d = k.d0 + i;
      for (int64_t n = 0; n < N; ++n) w.dA[d * N + n] += dAs[s * N + n][i];
      w.dD[d] += dDs[s][i];
      w.dbias[d] += dbiases[s][i];
    }
  }
}

template <typename T>
void zero_work(const Args& a, const Work<T>& w) {
  std::memset(w.dA, 0, sizeof(T) * a.dim * a.dstate);
  std::memset(w.dD, 0, sizeof(T) * a.dim);
  std::memset(w.dbias, 0, sizeof(T) * a.dim);
  std::memset(w.dB, 0, sizeof(T) * a.batch * a.groups_b * a.dstate * a.length);
  std::memset(w.dC, 0, sizeof(T) * a.batch * a.groups_c * a.dstate * a.length);
}

}  // namespace

extern "C" {

int64_t ssc_lanes() { return W; }

int64_t ssc_units(const Args* a) { return n_units(*a); }

void ssc_forward_f32(const Args* a, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) forward_unit<float>(*a, unit_of(*a, j), nullptr, nullptr, nullptr);
}

void ssc_forward_f64(const Args* a, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) forward_unit<double>(*a, unit_of(*a, j), nullptr, nullptr, nullptr);
}

void ssc_backward_f32(const Args* a, int64_t j0, int64_t j1, const Work<float>* w) {
  zero_work(*a, *w);
  for (int64_t j = j0; j < j1; ++j) backward_unit<float>(*a, unit_of(*a, j), *w);
}

void ssc_backward_f64(const Args* a, int64_t j0, int64_t j1, const Work<double>* w) {
  zero_work(*a, *w);
  for (int64_t j = j0; j < j1; ++j) backward_unit<double>(*a, unit_of(*a, j), *w);
}

}  // extern "C"
