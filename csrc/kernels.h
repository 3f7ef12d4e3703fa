// The hot loops of the native step. Compiled once per kernel set from
// kernels.cpp: on x86-64 the baseline (generic, SSE2), AVX2+FMA and
// AVX-512VL; on aarch64 generic (scalar: built without Advanced SIMD) and
// NEON. `kernels()` picks the best the CPU runs at run time, so a build never
// requires the build machine's CPU.
#pragma once

#include <vector>

namespace kb {

struct Kernels {
  const char* name;
  // C[rows x n] (+)= A[rows x k] . B[k x n] (+ bias[n] if not null). Row-major.
  void (*gemm)(const float* a, int rows, int k, const float* b, int n, const float* bias, float* c,
               bool accumulate);
  // LSTM cells of `rows` rows: gates [rows x 4h] in PyTorch order (i, f, g, o);
  // updates c and hidden [rows x h].
  void (*lstm_cells)(const float* gates, int rows, int h, float* c, float* hidden);
  // A whole LSTM pass over `steps` rows of precomputed input gates (bias
  // included), from zero state, forwards or in reverse; writes h of each step
  // to out[t * out_stride]. scratch: 6 * hidden floats.
  void (*lstm_sequence)(const float* gates_in, int in_stride, int steps, bool reverse,
                        const float* whh_t, int hidden, float* out, int out_stride,
                        float* scratch);
  // Both directions of a bidirectional LSTM from zero state over `steps` rows
  // of x [steps x dim], input projection included: wih_t [dim x 8h] and bias
  // [8h] are forward | reverse gates; whh_* [h x 4h]. out [steps x 2h].
  // Returns false (and does nothing) for sizes with no register-resident version.
  bool (*bilstm)(const float* x, int dim, const float* wih_t, const float* bias, int steps,
                 const float* whh_fwd, const float* whh_rev, int hidden, float* out);
  // x[i] = exp(x[i]) in place (for softmax).
  void (*exp_inplace)(float* x, int n);
  // out[s * out_stride] = dot(q, keys + s * key_stride, n) for s < count
  void (*dot_many)(const float* q, const float* keys, long key_stride, int count, int n,
                   float* out, int out_stride);
  // out[f][j] = sum_s weights[s][j] * values[s * frame_stride + f * dim + j]
  void (*weighted_sum)(const float* weights, const float* values, long frame_stride, int count,
                       int rows, int dim, float* out);
  // LayerNorm of each row of `dim` values; y may alias x.
  void (*channel_norm)(const float* x, float* y, int rows, int dim, const float* gamma,
                       const float* beta, float eps);
  // Attention projections' tail: PReLU with a slope per column, then
  // LayerNorm over (per_head columns x rows) of each head. scratch: 2 * width.
  void (*head_norm)(float* y, int rows, int width, int per_head, const float* slope,
                    const float* gamma, const float* beta, float eps, float* scratch);
  // One step of `rows` independent LSTMs (the across-time LSTM, a row per
  // bin): gates = x . wih_t + h . whh_t + bias, then the cell; c and h
  // [rows x hidden] are updated in place. False (nothing done) for sizes
  // without a register-resident version.
  bool (*lstm_rows)(const float* x, int dim, const float* wih_t, const float* whh_t,
                    const float* bias, int rows, int hidden, float* c, float* h);
  // The arithmetic peak this set can reach: `rounds` rounds of independent
  // multiply-adds in its widest vectors, as many chains as hide their latency.
  // Returns a value that depends on all of them; *flops gets the FLOPs done.
  float (*fma_peak)(long rounds, double* flops);
};

const Kernels& kernels();  // the best the running CPU supports, unless select_kernels chose
// Select a kernel set by name ("generic", "avx2", "avx512", "neon"); false if this CPU
// or build lacks it. For tests and benchmarks; not thread-safe with process().
bool select_kernels(const char* name);
// Names of the kernel sets this CPU can run, baseline first, best last.
std::vector<const char*> available_kernels();

namespace generic { extern const Kernels kKernels; }
#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 { extern const Kernels kKernels; }
namespace avx512 { extern const Kernels kKernels; }
#endif
#if defined(__aarch64__)
namespace neon { extern const Kernels kKernels; }
#endif

}  // namespace kb
