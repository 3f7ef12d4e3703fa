#include "kernels.h"

namespace kb {

const Kernels& generic_kernels() { return generic::kKernels; }

const Kernels& kernels() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (has_avx2) return avx2::kKernels;
#endif
  return generic::kKernels;
}

}  // namespace kb
