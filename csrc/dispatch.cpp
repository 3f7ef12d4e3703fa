#include "kernels.h"

#include <cstring>

namespace kb {
namespace {

const Kernels* best() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
    return &avx512::kKernels;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2::kKernels;
#endif
  return &generic::kKernels;
}

const Kernels* g_selected = best();

}  // namespace

const Kernels& generic_kernels() { return generic::kKernels; }

const Kernels& kernels() { return *g_selected; }

bool select_kernels(const char* name) {
  const Kernels* all[] = {
    &generic::kKernels,
#if defined(__x86_64__) || defined(_M_X64)
    &avx2::kKernels, &avx512::kKernels,
#endif
  };
  const Kernels* top = best();
  for (const Kernels* k : all) {
    if (std::strcmp(k->name, name) == 0) {
      // Only sets the running CPU supports: they are ordered, and best() is the top one.
      if (k == &generic::kKernels || k == top || (k == all[1] && top == all[2])) {
        g_selected = k;
        return true;
      }
    }
  }
  return false;
}

}  // namespace kb
