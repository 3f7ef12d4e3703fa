// Compiled once per ISA; KB_ISA names the namespace (see CMakeLists.txt).
// Plain loops over GCC vector types; the AVX-512 set adds a few intrinsics
// (masked loads, vscalefps) where the vector types cannot say it.
#include <cmath>
#include <cstdint>
#include <cstring>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "kernels.h"

#ifndef KB_ISA
#define KB_ISA generic
#define KB_ISA_NAME "generic"
#endif

namespace kb {
namespace KB_ISA {

// The native vector of each build (GCC/Clang vector extensions): 8 floats
// with AVX2, 4 with the baseline (SSE2 on x86-64, NEON on arm64). Wider types
// than the ISA has are lowered through memory, so each build uses its own.
#if defined(__AVX2__)
constexpr int kL = 8;
typedef float vf __attribute__((vector_size(32)));
typedef float vfu __attribute__((vector_size(32), aligned(4)));  // unaligned access
typedef int32_t vfi __attribute__((vector_size(32)));
#else
constexpr int kL = 4;
typedef float vf __attribute__((vector_size(16)));
typedef float vfu __attribute__((vector_size(16), aligned(4)));
typedef int32_t vfi __attribute__((vector_size(16)));
#endif
typedef float v4u __attribute__((vector_size(16), aligned(4)));
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
// x in every lane, as one broadcast load. (`vf{} + x` is not x for x = -0, so
// the compiler keeps a scalar add before the broadcast; x - 0 is always x.)
template <typename V>
inline V broadcast(float x) {
  return x - V{};
}
inline vf splat(float x) { return broadcast<vf>(x); }

// x limited to [lo, hi], NaN kept; one min and one max where the ISA has them
// (the plain ternaries compile to a compare and a blend each).
template <typename V>
inline V clamp(V x, float lo, float hi) {
#ifdef __AVX512F__
  if constexpr (sizeof(V) == 64)
    return (V)_mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), (__m512)x));
#endif
#ifdef __AVX2__
  if constexpr (sizeof(V) == 32)
    return (V)_mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), (__m256)x));
#endif
  x = x < lo ? V{} + lo : x;
  return x > hi ? V{} + hi : x;
}

// exp with a degree-6 polynomial on [-ln2/2, ln2/2] and exponent bit tricks; about 2 ulp.
// kClamp = false where the caller has already limited x to a safe range.
template <typename V, typename VI, bool kClamp = true>
inline V exp_poly(V x) {
  if (kClamp) x = clamp(x, -87.f, 88.f);
  const float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const V n = (x * 1.44269504088896341f + kRound) - kRound;
  V r = x - n * 0.693145751953125f;
  r -= n * 1.428606765330187045e-06f;
  V p = V{} + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  VI bits;
#ifdef __AVX512F__
  if constexpr (sizeof(V) == 64) {
    return (V)_mm512_scalef_ps((__m512)p, (__m512)n);
  } else
#endif
  if constexpr (sizeof(V) == sizeof(float)) {
    bits = (static_cast<VI>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
  } else {
    bits = (__builtin_convertvector(n, VI) + 127) << 23;
    return p * (V)bits;
  }
}

inline float fast_exp(float x) { return exp_poly<float, int32_t>(x); }
inline vf expv(vf x) { return exp_poly<vf, vfi>(x); }
inline float sigmoid(float x) { return 1.f / (1.f + fast_exp(-x)); }
inline float tanh_(float x) { return 2.f / (1.f + fast_exp(-2.f * x)) - 1.f; }

// R rows x W vectors of columns of C held in registers across the whole k loop.
template <int R, int W>
inline void gemm_block(const float* __restrict a, int k, const float* __restrict b, int n,
                       const float* __restrict bias, float* __restrict c, bool accumulate) {
  vf acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) acc[r][w] = accumulate ? load(c + r * n + kL * w) : vf{};
  if (bias)
    for (int r = 0; r < R; ++r)
      for (int w = 0; w < W; ++w) acc[r][w] += load(bias + kL * w);
  for (int p = 0; p < k; ++p) {
    vf bp[W];
    for (int w = 0; w < W; ++w) bp[w] = load(b + p * n + kL * w);
    for (int r = 0; r < R; ++r) {
      const vf x = splat(a[r * k + p]);
      for (int w = 0; w < W; ++w) acc[r][w] += x * bp[w];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) store(c + r * n + kL * w, acc[r][w]);
}

// Four columns (the remainder of widths like 12) with 4-float vectors.
template <int R>
inline void gemm_block4(const float* __restrict a, int k, const float* __restrict b, int n,
                        const float* __restrict bias, float* __restrict c, bool accumulate) {
  v4u acc[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = accumulate ? *reinterpret_cast<const v4u*>(c + r * n) : v4u{};
    if (bias) acc[r] += *reinterpret_cast<const v4u*>(bias);
  }
  for (int p = 0; p < k; ++p) {
    const v4u bp = *reinterpret_cast<const v4u*>(b + p * n);
    for (int r = 0; r < R; ++r) acc[r] += a[r * k + p] * bp;
  }
  for (int r = 0; r < R; ++r) *reinterpret_cast<v4u*>(c + r * n) = acc[r];
}

// Columns that do not fill a vector.
inline void gemm_tail(const float* a, int rows, int k, const float* b, int n, int j0,
                      const float* bias, float* c, bool accumulate) {
  for (int r = 0; r < rows; ++r)
    for (int j = j0; j < n; ++j) {
      float acc = (accumulate ? c[r * n + j] : 0.f) + (bias ? bias[j] : 0.f);
      for (int p = 0; p < k; ++p) acc += a[r * k + p] * b[p * n + j];
      c[r * n + j] = acc;
    }
}

template <int R>
inline void gemm_rows(const float* a, int k, const float* b, int n, const float* bias, float* c,
                      bool accumulate) {
  int j = 0;
  if (R == 1)  // a single row needs wide blocks for enough independent FMA chains
    for (; j + 8 * kL <= n; j += 8 * kL)
      gemm_block<1, 8>(a, k, b + j, n, bias ? bias + j : nullptr, c + j, accumulate);
  for (; j + 2 * kL <= n; j += 2 * kL)
    gemm_block<R, 2>(a, k, b + j, n, bias ? bias + j : nullptr, c + j, accumulate);
  for (; j + kL <= n; j += kL)
    gemm_block<R, 1>(a, k, b + j, n, bias ? bias + j : nullptr, c + j, accumulate);
  for (; j + 4 <= n; j += 4)
    gemm_block4<R>(a, k, b + j, n, bias ? bias + j : nullptr, c + j, accumulate);
}

#ifdef __AVX512F__
// The AVX-512 set builds with 256-bit vectors preferred (no wide-vector
// surprises in plain loops); its GEMMs use 16-float vectors explicitly.
// R rows x W 16-float vectors of columns, for widths that are whole 16-float vectors.
template <int R, int W>
inline void gemm_block16(const float* __restrict a, int k, const float* __restrict b, int n,
                         const float* __restrict bias, float* __restrict c, bool accumulate) {
  auto ld = [](const float* p) { v16 v; std::memcpy(&v, p, sizeof v); return v; };
  v16 acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) {
      acc[r][w] = accumulate ? ld(c + r * n + 16 * w) : v16{};
      if (bias) acc[r][w] += ld(bias + 16 * w);
    }
  for (int p = 0; p < k; ++p) {
    v16 bp[W];
    for (int w = 0; w < W; ++w) bp[w] = ld(b + p * n + 16 * w);
    for (int r = 0; r < R; ++r) {
      const v16 x = broadcast<v16>(a[r * k + p]);
      for (int w = 0; w < W; ++w) acc[r][w] += x * bp[w];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) std::memcpy(c + r * n + 16 * w, &acc[r][w], sizeof(v16));
}

// 9 to 15 columns: one masked 16-float vector per row (masked loads never read past b).
template <int R>
inline void gemm_block16_narrow(const float* __restrict a, int k, const float* __restrict b,
                                int n, const float* __restrict bias, float* __restrict c,
                                bool accumulate) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = accumulate ? _mm512_maskz_loadu_ps(m, c + r * n) : _mm512_setzero_ps();
    if (bias) acc[r] = _mm512_add_ps(acc[r], _mm512_maskz_loadu_ps(m, bias));
  }
  for (int p = 0; p < k; ++p) {
    const __m512 bp = _mm512_maskz_loadu_ps(m, b + p * n);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * k + p]), bp, acc[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(c + r * n, m, acc[r]);
}

// R rows at a time in blocks of 8 / R vectors: enough independent chains even
// for one to three rows (the STFT's channels).
template <int R>
inline void gemm_rows16(const float* a, int k, const float* b, int n, const float* bias,
                        float* c, bool accumulate) {
  constexpr int W = 8 / R;
  int j = 0;
  for (; j + 16 * W <= n; j += 16 * W)
    gemm_block16<R, W>(a, k, b + j, n, bias ? bias + j : nullptr, c + j, accumulate);
  if (W > 2)
    for (; j + 32 <= n; j += 32)
      gemm_block16<R, 2>(a, k, b + j, n, bias ? bias + j : nullptr, c + j, accumulate);
  for (; j + 16 <= n; j += 16)
    gemm_block16<R, 1>(a, k, b + j, n, bias ? bias + j : nullptr, c + j, accumulate);
}
#endif

void gemm(const float* a, int rows, int k, const float* b, int n, const float* bias, float* c,
          bool accumulate) {
  int r = 0;
#ifdef __AVX512F__
  if (n % 16 == 0) {
    for (; r + 4 <= rows; r += 4) gemm_rows16<4>(a + r * k, k, b, n, bias, c + r * n, accumulate);
    for (; r + 2 <= rows; r += 2) gemm_rows16<2>(a + r * k, k, b, n, bias, c + r * n, accumulate);
    for (; r < rows; ++r) gemm_rows16<1>(a + r * k, k, b, n, bias, c + r * n, accumulate);
    return;
  }
  if (n > 8 && n < 16) {
    for (; r + 4 <= rows; r += 4)
      gemm_block16_narrow<4>(a + r * k, k, b, n, bias, c + r * n, accumulate);
    for (; r < rows; ++r) gemm_block16_narrow<1>(a + r * k, k, b, n, bias, c + r * n, accumulate);
    return;
  }
#endif
  if (n <= kL)  // one vector of columns: eight rows at a time for eight independent chains
    for (; r + 8 <= rows; r += 8) gemm_rows<8>(a + r * k, k, b, n, bias, c + r * n, accumulate);
  for (; r + 4 <= rows; r += 4) gemm_rows<4>(a + r * k, k, b, n, bias, c + r * n, accumulate);
  for (; r < rows; ++r) gemm_rows<1>(a + r * k, k, b, n, bias, c + r * n, accumulate);
  const int j0 = n / 4 * 4;
  if (j0 < n) gemm_tail(a, rows, k, b, n, j0, bias, c, accumulate);
}

void vecmat_acc(const float* __restrict x, int k, const float* __restrict b, int n,
                float* __restrict y) {
  for (int p = 0; p < k; ++p) {
    const float xp = x[p];
    const float* bp = b + p * n;
    for (int j = 0; j < n; ++j) y[j] += xp * bp[j];
  }
}

// With e_x = exp(-x): sigmoid(x) = 1 / (1 + e_x), tanh(x) = (1 - e_2x) / (1 + e_2x).
// Putting each update over one denominator needs 2 divisions instead of 5.
// Clamping the exponents to +-25 keeps the triple products finite and changes
// no gate by more than 1e-10.
template <typename V, typename VI>
inline __attribute__((always_inline)) void lstm_cell_vec(const float* g, int h, int j, float* c,
                                                         float* hidden) {
  auto ld = [](const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; };
  auto st = [](float* p, V v) { std::memcpy(p, &v, sizeof v); };
  auto e = [](V x) { return exp_poly<V, VI, false>(-clamp(x, -25.f, 25.f)); };
  const V ei = 1.f + e(ld(g + j));
  const V ef = 1.f + e(ld(g + h + j));
  const V eu = e(2.f * ld(g + 2 * h + j));
  const V eo = 1.f + e(ld(g + 3 * h + j));
  // c' = c / ef + (1 - eu) / (ei (1 + eu))
  const V den = ei * (1.f + eu);
  const V cj = (ld(c + j) * den + (1.f - eu) * ef) / (ef * den);
  st(c + j, cj);
  // h' = tanh(c') / eo
  const V ec = e(2.f * cj);
  st(hidden + j, (1.f - ec) / (eo * (1.f + ec)));
}

inline __attribute__((always_inline)) void lstm_cell_inline(const float* __restrict g, int h,
                                                           float* __restrict c,
                                                           float* __restrict hidden) {
  int j = 0;
#ifdef __AVX512F__
  for (; j + 16 <= h; j += 16) lstm_cell_vec<v16, v16i>(g, h, j, c, hidden);
#endif
  for (; j + kL <= h; j += kL) lstm_cell_vec<vf, vfi>(g, h, j, c, hidden);
  for (; j < h; ++j) {
    const float cj = sigmoid(g[h + j]) * c[j] + sigmoid(g[j]) * tanh_(g[2 * h + j]);
    c[j] = cj;
    hidden[j] = sigmoid(g[3 * h + j]) * tanh_(cj);
  }
}

void lstm_cells(const float* g, int rows, int h, float* c, float* hidden) {
  for (int r = 0; r < rows; ++r)
    lstm_cell_inline(g + r * 4 * h, h, c + r * h, hidden + r * h);
}

// The sequential heart of the across-frequency LSTM, with the gate vector
// of H = compile-time size held in registers, L floats a vector V. Each lane
// sums its gate in input order whatever L is, so every width gives the same bits.
// B gate vectors are summed per pass over h: all of them at once where the
// registers hold them, so each step broadcasts h and streams W_hh once.
template <int H, typename V = vf, int L = kL, int B = (4 * H / L < 8 ? 4 * H / L : 8)>
void lstm_sequence_fixed(const float* __restrict gates_in, int in_stride, int steps, bool reverse,
                         const float* __restrict whh_t, float* __restrict out, int out_stride) {
  constexpr int G = 4 * H / L;  // gate vectors
  static_assert(G % B == 0, "gate vectors must split into blocks");
  auto ld = [](const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; };
  auto st = [](float* p, V v) { std::memcpy(p, &v, sizeof v); };
  alignas(64) float h[H] = {}, c[H] = {};
  alignas(64) float g[4 * H];
  for (int i = 0; i < steps; ++i) {
    const int t = reverse ? steps - 1 - i : i;
    const float* gi = gates_in + t * in_stride;
    for (int wb = 0; wb < G; wb += B) {
      V acc[B];
      for (int w = 0; w < B; ++w) acc[w] = ld(gi + L * (wb + w));
      for (int p = 0; p < H; ++p) {
        const V hp = broadcast<V>(h[p]);
        const float* wp = whh_t + p * 4 * H + L * wb;
        for (int w = 0; w < B; ++w) acc[w] += hp * ld(wp + L * w);
      }
      for (int w = 0; w < B; ++w) st(g + L * (wb + w), acc[w]);
    }
    lstm_cell_inline(g, H, c, h);
    float* o = out + t * out_stride;
    for (int j = 0; j < H; ++j) o[j] = h[j];
  }
}

// Both directions of a bidirectional LSTM at once, input projection included:
// the two recurrences are independent, and the input products of a step do
// not depend on the previous one, so interleaving all of it fills the time
// each step waits on its own dependency chain. The recurrent products are
// split into two partial sums (even/odd inputs) to halve that chain.
template <int H, typename V, int L, int P, int B>
void bilstm_fixed(const float* __restrict x, int dim, const float* __restrict wih_t,
                  const float* __restrict bias, int steps, const float* __restrict whh_fwd,
                  const float* __restrict whh_rev, float* __restrict out) {
  // G gate vectors per direction, computed B at a time so that 2 x P x B
  // accumulators stay in registers; all products of a step come before its cells.
  constexpr int G = 4 * H / L;
  static_assert(G % B == 0, "gate vectors must split into blocks");
  auto ld = [](const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; };
  auto st = [](float* p, V v) { std::memcpy(p, &v, sizeof v); };
  alignas(64) float h[2][H] = {}, c[2][H] = {};
  alignas(64) float g[2][4 * H];
  const float* whh[2] = {whh_fwd, whh_rev};
  for (int i = 0; i < steps; ++i) {
    const int t[2] = {i, steps - 1 - i};
    for (int wb = 0; wb < G; wb += B) {
      V acc[2][P][B];
      for (int d = 0; d < 2; ++d) {
        for (int w = 0; w < B; ++w) {
          acc[d][0][w] = ld(bias + d * 4 * H + L * (wb + w));
          if (P > 1) acc[d][P - 1][w] = V{};
        }
        const float* xt = x + t[d] * dim;
        for (int p = 0; p < dim; ++p) {
          const V xp = broadcast<V>(xt[p]);
          const float* wp = wih_t + p * 8 * H + d * 4 * H + L * wb;
          for (int w = 0; w < B; ++w) acc[d][P - 1][w] += xp * ld(wp + L * w);
        }
      }
      for (int p = 0; p < H; p += P)
        for (int d = 0; d < 2; ++d)
          for (int q = 0; q < P; ++q) {
            const V hp = broadcast<V>(h[d][p + q]);
            const float* wp = whh[d] + (p + q) * 4 * H + L * wb;
            for (int w = 0; w < B; ++w) acc[d][q][w] += hp * ld(wp + L * w);
          }
      for (int d = 0; d < 2; ++d)
        for (int w = 0; w < B; ++w)
          st(g[d] + L * (wb + w), P > 1 ? acc[d][0][w] + acc[d][P - 1][w] : acc[d][0][w]);
    }
    lstm_cell_inline(g[0], H, c[0], h[0]);
    lstm_cell_inline(g[1], H, c[1], h[1]);
    std::memcpy(out + t[0] * 2 * H, h[0], sizeof h[0]);  // whole vectors, not lane by lane
    std::memcpy(out + t[1] * 2 * H + H, h[1], sizeof h[1]);
  }
}

void lstm_sequence_any(const float* gates_in, int in_stride, int steps, bool reverse,
                       const float* whh_t, int hidden, float* out, int out_stride,
                       float* scratch) {
  float* h = scratch;
  float* c = scratch + hidden;
  float* g = scratch + 2 * hidden;
  for (int j = 0; j < hidden; ++j) h[j] = c[j] = 0.f;
  for (int i = 0; i < steps; ++i) {
    const int t = reverse ? steps - 1 - i : i;
    std::memcpy(g, gates_in + t * in_stride, sizeof(float) * 4 * hidden);
    vecmat_acc(h, hidden, whh_t, 4 * hidden, g);
    lstm_cell_inline(g, hidden, c, h);
    std::memcpy(out + t * out_stride, h, sizeof(float) * hidden);
  }
}

void lstm_sequence(const float* gates_in, int in_stride, int steps, bool reverse,
                   const float* whh_t, int hidden, float* out, int out_stride, float* scratch) {
  switch (hidden) {
    case 8: return lstm_sequence_fixed<8>(gates_in, in_stride, steps, reverse, whh_t, out,
                                          out_stride);
    case 16: return lstm_sequence_fixed<16>(gates_in, in_stride, steps, reverse, whh_t, out,
                                            out_stride);
    case 32: return lstm_sequence_fixed<32>(gates_in, in_stride, steps, reverse, whh_t, out,
                                            out_stride);
#ifdef __AVX512F__  // all 16 gate vectors of 16 floats in 16 of the 32 registers
    case 64: return lstm_sequence_fixed<64, v16, 16, 16>(gates_in, in_stride, steps, reverse,
                                                         whh_t, out, out_stride);
#else
    case 64: return lstm_sequence_fixed<64>(gates_in, in_stride, steps, reverse, whh_t, out,
                                            out_stride);
#endif
    default: return lstm_sequence_any(gates_in, in_stride, steps, reverse, whh_t, hidden, out,
                                      out_stride, scratch);
  }
}

float dot(const float* __restrict a, const float* __restrict b, int n) {
  vf acc0{}, acc1{};
  int i = 0;
  for (; i + 2 * kL <= n; i += 2 * kL) {
    acc0 += load(a + i) * load(b + i);
    acc1 += load(a + i + kL) * load(b + i + kL);
  }
  for (; i + kL <= n; i += kL) acc0 += load(a + i) * load(b + i);
  acc0 += acc1;
  float total = 0.f;
  for (; i < n; ++i) total += a[i] * b[i];
  for (int j = 0; j < kL; ++j) total += acc0[j];
  return total;
}

void weighted_sum(const float* __restrict weights, const float* __restrict values,
                  long frame_stride, int count, int rows, int dim, float* __restrict out) {
  // Four frames at a time: each frame's values stream contiguously, `out`
  // stays in L1 and is loaded and stored once per four products.
  const int n = rows * dim;
  for (int i = 0; i < n; ++i) out[i] = 0.f;
  int s = 0;
#ifdef __AVX512F__
  if (dim == 16) {  // a row is one 16-float vector: four frames' weights stay in registers
    auto ld = [](const float* p) { v16 v; std::memcpy(&v, p, sizeof v); return v; };
    for (; s + 4 <= count; s += 4) {
      const float* v = values + s * frame_stride;
      const v16 w0 = ld(weights + s * 16), w1 = ld(weights + s * 16 + 16),
                w2 = ld(weights + s * 16 + 32), w3 = ld(weights + s * 16 + 48);
      for (int f = 0; f < rows; ++f) {
        v16 acc = ld(out + f * 16);
        acc += w0 * ld(v + f * 16);
        acc += w1 * ld(v + frame_stride + f * 16);
        acc += w2 * ld(v + 2 * frame_stride + f * 16);
        acc += w3 * ld(v + 3 * frame_stride + f * 16);
        std::memcpy(out + f * 16, &acc, sizeof acc);
      }
    }
  }
#endif
  if (dim % kL == 0) {
    for (; s + 4 <= count; s += 4) {
      const float* v = values + s * frame_stride;
      const float* w = weights + s * dim;
      for (int f = 0; f < rows; ++f)
        for (int j = 0; j < dim; j += kL) {
          const int i = f * dim + j;
          vf acc = load(out + i);
          acc += load(w + j) * load(v + i);
          acc += load(w + dim + j) * load(v + frame_stride + i);
          acc += load(w + 2 * dim + j) * load(v + 2 * frame_stride + i);
          acc += load(w + 3 * dim + j) * load(v + 3 * frame_stride + i);
          store(out + i, acc);
        }
    }
  }
  for (; s < count; ++s) {
    const float* v = values + s * frame_stride;
    const float* w = weights + s * dim;
    for (int f = 0; f < rows; ++f)
      for (int j = 0; j < dim; ++j) out[f * dim + j] += w[j] * v[f * dim + j];
  }
}

void dot_many(const float* __restrict q, const float* __restrict keys, long key_stride,
              int count, int n, float* __restrict out, int out_stride) {
  // Four keys per pass over q: four independent chains, q loaded once.
  int s = 0;
  for (; s + 4 <= count; s += 4) {
    const float* k0 = keys + s * key_stride;
    const float* k1 = k0 + key_stride;
    const float* k2 = k1 + key_stride;
    const float* k3 = k2 + key_stride;
    vf a0{}, a1{}, a2{}, a3{};
    int i = 0;
    for (; i + kL <= n; i += kL) {
      const vf x = load(q + i);
      a0 += x * load(k0 + i);
      a1 += x * load(k1 + i);
      a2 += x * load(k2 + i);
      a3 += x * load(k3 + i);
    }
    float r[4] = {0.f, 0.f, 0.f, 0.f};
    for (; i < n; ++i) {
      r[0] += q[i] * k0[i];
      r[1] += q[i] * k1[i];
      r[2] += q[i] * k2[i];
      r[3] += q[i] * k3[i];
    }
    for (int j = 0; j < kL; ++j) {
      r[0] += a0[j];
      r[1] += a1[j];
      r[2] += a2[j];
      r[3] += a3[j];
    }
    for (int j = 0; j < 4; ++j) out[(s + j) * out_stride] = r[j];
  }
  for (; s < count; ++s) out[s * out_stride] = dot(q, keys + s * key_stride, n);
}

#ifdef __AVX512F__
inline float sum_lanes(__m512 v) {
  __m256 low;  // (GCC 12's _mm512_castps512_ps256 warns of an uninitialised value)
  std::memcpy(&low, &v, sizeof low);
  const __m256 a = _mm256_add_ps(low, _mm512_extractf32x8_ps(v, 1));
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}
#endif

void channel_norm(const float* x, float* y, int rows, int dim, const float* __restrict gamma,
                  const float* __restrict beta, float eps) {
#ifdef __AVX512F__
  if (dim % 16 == 0) {  // whole 16-float vectors per row, reduced in registers
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;  // may alias x (in-place use)
      __m512 lanes = _mm512_setzero_ps(), lanes_sq = _mm512_setzero_ps();
      for (int c = 0; c < dim; c += 16) {
        const __m512 v = _mm512_loadu_ps(xr + c);
        lanes = _mm512_add_ps(lanes, v);
        lanes_sq = _mm512_fmadd_ps(v, v, lanes_sq);
      }
      const float mean = sum_lanes(lanes) / dim;
      const float var = sum_lanes(lanes_sq) / dim - mean * mean;
      const __m512 m = _mm512_set1_ps(mean);
      const __m512 inv = _mm512_set1_ps(1.f / std::sqrt((var > 0.f ? var : 0.f) + eps));
      for (int c = 0; c < dim; c += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + c), m), inv);
        _mm512_storeu_ps(yr + c, _mm512_fmadd_ps(v, _mm512_loadu_ps(gamma + c),
                                                 _mm512_loadu_ps(beta + c)));
      }
    }
    return;
  }
#endif
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;  // may alias x (in-place use)
    vf lanes{}, lanes_sq{};
    int c = 0;
    for (; c + kL <= dim; c += kL) {
      const vf v = load(xr + c);
      lanes += v;
      lanes_sq += v * v;
    }
    float sum = 0.f, sq = 0.f;
    for (; c < dim; ++c) {
      sum += xr[c];
      sq += xr[c] * xr[c];
    }
    for (int j = 0; j < kL; ++j) {
      sum += lanes[j];
      sq += lanes_sq[j];
    }
    const float mean = sum / dim;
    const float var = sq / dim - mean * mean;
    const float inv = 1.f / std::sqrt((var > 0.f ? var : 0.f) + eps);
    for (c = 0; c < dim; ++c) yr[c] = (xr[c] - mean) * inv * gamma[c] + beta[c];
  }
}

// PReLU (slope per column), then LayerNorm over (per_head columns x all rows)
// of each head, with per-(row, column) gamma/beta. Vectors of 8 or 4 columns.
template <typename V, int L>
void head_norm_vec(float* y, int rows, int width, int per_head, const float* slope,
                   const float* gamma, const float* beta, float eps, float* scratch) {
  float* sum = scratch;
  float* sq = scratch + width;
  auto ld = [](const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; };
  auto st = [](float* p, V v) { std::memcpy(p, &v, sizeof v); };
  for (int j = 0; j < width; j += L) {
    const V a = ld(slope + j);
    V s1{}, s2{};
    for (int f = 0; f < rows; ++f) {
      V v = ld(y + f * width + j);
      v = v >= 0.f ? v : a * v;
      st(y + f * width + j, v);
      s1 += v;
      s2 += v * v;
    }
    st(sum + j, s1);
    st(sq + j, s2);
  }
  const float n = static_cast<float>(per_head) * rows;
  for (int h = 0; h < width / per_head; ++h) {
    double s1 = 0, s2 = 0;
    for (int c = h * per_head; c < (h + 1) * per_head; ++c) {
      s1 += sum[c];
      s2 += sq[c];
    }
    const double mean = s1 / n;
    const double var = s2 / n - mean * mean;
    const float inv = static_cast<float>(1.0 / std::sqrt((var > 0 ? var : 0) + eps));
    for (int c = h * per_head; c < (h + 1) * per_head; ++c) {
      sum[c] = static_cast<float>(mean);
      sq[c] = inv;
    }
  }
  for (int j = 0; j < width; j += L) {
    const V m = ld(sum + j), inv = ld(sq + j);
    for (int f = 0; f < rows; ++f) {
      const int i = f * width + j;
      st(y + i, (ld(y + i) - m) * inv * ld(gamma + i) + ld(beta + i));
    }
  }
}

typedef float v1 __attribute__((vector_size(4)));

void head_norm(float* y, int rows, int width, int per_head, const float* slope,
               const float* gamma, const float* beta, float eps, float* scratch) {
  if (width % kL == 0)
    head_norm_vec<vf, kL>(y, rows, width, per_head, slope, gamma, beta, eps, scratch);
  else if (width % 4 == 0)
    head_norm_vec<v4u, 4>(y, rows, width, per_head, slope, gamma, beta, eps, scratch);
  else
    head_norm_vec<v1, 1>(y, rows, width, per_head, slope, gamma, beta, eps, scratch);
}

// The across-time LSTM of many independent rows (one per bin): gates for R
// rows stay in registers from the products to the cell, never stored.
template <int H, typename V, int L, int R>
void lstm_rows_fixed(const float* __restrict x, int dim, const float* __restrict wih_t,
                     const float* __restrict whh_t, const float* __restrict bias, int rows,
                     float* __restrict c, float* __restrict h) {
  constexpr int G = 4 * H / L;
  auto ld = [](const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; };
  auto st = [](float* p, V v) { std::memcpy(p, &v, sizeof v); };
  alignas(64) float g[R][4 * H];
  int r0 = 0;
  for (; r0 + R <= rows; r0 += R) {
    V acc[R][G];
    for (int r = 0; r < R; ++r)
      for (int w = 0; w < G; ++w) acc[r][w] = ld(bias + L * w);
    for (int p = 0; p < dim; ++p) {
      V wv[G];
      for (int w = 0; w < G; ++w) wv[w] = ld(wih_t + p * 4 * H + L * w);
      for (int r = 0; r < R; ++r) {
        const V xp = broadcast<V>(x[(r0 + r) * dim + p]);
        for (int w = 0; w < G; ++w) acc[r][w] += xp * wv[w];
      }
    }
    for (int p = 0; p < H; ++p) {
      V wv[G];
      for (int w = 0; w < G; ++w) wv[w] = ld(whh_t + p * 4 * H + L * w);
      for (int r = 0; r < R; ++r) {
        const V hp = broadcast<V>(h[(r0 + r) * H + p]);
        for (int w = 0; w < G; ++w) acc[r][w] += hp * wv[w];
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int w = 0; w < G; ++w) st(g[r] + L * w, acc[r][w]);
      lstm_cell_inline(g[r], H, c + (r0 + r) * H, h + (r0 + r) * H);
    }
  }
  if (r0 < rows) lstm_rows_fixed<H, V, L, 1>(x + r0 * dim, dim, wih_t, whh_t, bias, rows - r0,
                                             c + r0 * H, h + r0 * H);
}

bool lstm_rows(const float* x, int dim, const float* wih_t, const float* whh_t,
               const float* bias, int rows, int hidden, float* c, float* h) {
  switch (hidden) {
#ifdef __AVX512F__
    case 16: lstm_rows_fixed<16, v16, 16, 4>(x, dim, wih_t, whh_t, bias, rows, c, h); return true;
    case 32: lstm_rows_fixed<32, v16, 16, 2>(x, dim, wih_t, whh_t, bias, rows, c, h); return true;
#else
    case 16: lstm_rows_fixed<16, vf, kL, 1>(x, dim, wih_t, whh_t, bias, rows, c, h); return true;
#endif
    default: return false;
  }
}

bool bilstm(const float* x, int dim, const float* wih_t, const float* bias, int steps,
            const float* whh_fwd, const float* whh_rev, int hidden, float* out) {
#ifdef __AVX512F__  // 32 registers: two partial sums of all 4 gate vectors per direction
  using VW = v16;
  constexpr int LW = 16, P = 2, B = 4;
#else  // 16 registers: half the gate vectors at a time
  using VW = vf;
  constexpr int LW = kL, P = 1, B = 4;
#endif
  switch (hidden) {
    case 8:
      bilstm_fixed<8, vf, kL, 1, 4>(x, dim, wih_t, bias, steps, whh_fwd, whh_rev, out);
      return true;
    case 16:
      bilstm_fixed<16, VW, LW, P, B>(x, dim, wih_t, bias, steps, whh_fwd, whh_rev, out);
      return true;
    case 32:
      bilstm_fixed<32, VW, LW, P, B>(x, dim, wih_t, bias, steps, whh_fwd, whh_rev, out);
      return true;
    default: return false;  // larger states do not fit registers: one direction at a time
  }
}

void exp_inplace(float* x, int n) {
  int i = 0;
  for (; i + kL <= n; i += kL) store(x + i, expv(load(x + i)));
  for (; i < n; ++i) x[i] = fast_exp(x[i]);
}

float fma_peak(long rounds, double* flops) {
#ifdef __AVX512F__
  using V = v16;
#else
  using V = vf;
#endif
  constexpr int kChains = 12;  // > latency x ports on every core here (4 x 2)
  constexpr int kLanes = sizeof(V) / sizeof(float);
  V acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = broadcast<V>(static_cast<float>(i));
  const V scale = broadcast<V>(0.999999f), step = broadcast<V>(1e-6f);
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * scale + step;
  *flops = 2.0 * kLanes * kChains * static_cast<double>(rounds);
  float total = 0.f;
  for (int i = 0; i < kChains; ++i)
    for (int j = 0; j < kLanes; ++j) total += acc[i][j];
  return total;
}

extern const Kernels kKernels;
const Kernels kKernels = {KB_ISA_NAME, gemm,     lstm_cells,   lstm_sequence, bilstm,   exp_inplace,
                          dot_many,    weighted_sum, channel_norm, head_norm, lstm_rows,
                          fma_peak};

}  // namespace KB_ISA
}  // namespace kb
