// Compiled once per ISA; KB_ISA names the namespace (see CMakeLists.txt).
// Plain loops written so the compiler vectorises them; no intrinsics needed.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"

#ifndef KB_ISA
#define KB_ISA generic
#define KB_ISA_NAME "generic"
#endif

namespace kb {
namespace KB_ISA {
namespace {

// exp with a degree-6 polynomial on [-ln2/2, ln2/2] and exponent bit tricks;
// about 2 ulp, branch-free so loops over it vectorise.
inline float fast_exp(float x) {
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693145751953125f;
  r -= n * 1.428606765330187045e-06f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid(float x) { return 1.f / (1.f + fast_exp(-x)); }
inline float tanh_(float x) { return 2.f / (1.f + fast_exp(-2.f * x)) - 1.f; }

void gemm(const float* __restrict a, int rows, int k, const float* __restrict b, int n,
          const float* __restrict bias, float* __restrict c, bool accumulate) {
  // Four rows at a time share each row of B; columns are the vectorised axis.
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    float* c0 = c + (r + 0) * n;
    float* c1 = c + (r + 1) * n;
    float* c2 = c + (r + 2) * n;
    float* c3 = c + (r + 3) * n;
    if (!accumulate) {
      for (int j = 0; j < n; ++j) c0[j] = c1[j] = c2[j] = c3[j] = 0.f;
    }
    if (bias) {
      for (int j = 0; j < n; ++j) {
        c0[j] += bias[j];
        c1[j] += bias[j];
        c2[j] += bias[j];
        c3[j] += bias[j];
      }
    }
    const float* a0 = a + (r + 0) * k;
    const float* a1 = a + (r + 1) * k;
    const float* a2 = a + (r + 2) * k;
    const float* a3 = a + (r + 3) * k;
    for (int p = 0; p < k; ++p) {
      const float* bp = b + p * n;
      const float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
      for (int j = 0; j < n; ++j) {
        const float w = bp[j];
        c0[j] += x0 * w;
        c1[j] += x1 * w;
        c2[j] += x2 * w;
        c3[j] += x3 * w;
      }
    }
  }
  for (; r < rows; ++r) {
    float* cr = c + r * n;
    if (!accumulate) std::memset(cr, 0, sizeof(float) * n);
    if (bias)
      for (int j = 0; j < n; ++j) cr[j] += bias[j];
    const float* ar = a + r * k;
    for (int p = 0; p < k; ++p) {
      const float* bp = b + p * n;
      const float x = ar[p];
      for (int j = 0; j < n; ++j) cr[j] += x * bp[j];
    }
  }
}

void vecmat_acc(const float* __restrict x, int k, const float* __restrict b, int n,
                float* __restrict y) {
  for (int p = 0; p < k; ++p) {
    const float xp = x[p];
    const float* bp = b + p * n;
    for (int j = 0; j < n; ++j) y[j] += xp * bp[j];
  }
}

void lstm_cell(const float* __restrict g, int h, float* __restrict c, float* __restrict hidden) {
  for (int j = 0; j < h; ++j) {
    const float i = sigmoid(g[j]);
    const float f = sigmoid(g[h + j]);
    const float u = tanh_(g[2 * h + j]);
    const float o = sigmoid(g[3 * h + j]);
    c[j] = f * c[j] + i * u;
    hidden[j] = o * tanh_(c[j]);
  }
}

void exp_inplace(float* x, int n) {
  for (int i = 0; i < n; ++i) x[i] = fast_exp(x[i]);
}

}  // namespace

extern const Kernels kKernels;
const Kernels kKernels = {KB_ISA_NAME, gemm, vecmat_acc, lstm_cell, exp_inplace};

}  // namespace KB_ISA
}  // namespace kb
