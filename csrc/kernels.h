// The hot loops of the native step. Compiled twice from kernels.cpp: once
// for the baseline ISA and once with AVX2+FMA; `kernels()` picks one at run
// time, so a build never requires the build machine's CPU.
#pragma once

namespace kb {

struct Kernels {
  const char* name;
  // C[rows x n] (+)= A[rows x k] . B[k x n] (+ bias[n] if not null). Row-major.
  void (*gemm)(const float* a, int rows, int k, const float* b, int n, const float* bias, float* c,
               bool accumulate);
  // y[n] += x[k] . B[k x n]
  void (*vecmat_acc)(const float* x, int k, const float* b, int n, float* y);
  // LSTM cell on one row: gates [4h] in PyTorch order (i, f, g, o); updates c and h.
  void (*lstm_cell)(const float* gates, int h, float* c, float* hidden);
  // x[i] = exp(x[i]) in place (for softmax).
  void (*exp_inplace)(float* x, int n);
};

const Kernels& kernels();          // the best the running CPU supports
const Kernels& generic_kernels();  // baseline, for tests

namespace generic { extern const Kernels kKernels; }
#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 { extern const Kernels kKernels; }
#endif

}  // namespace kb
