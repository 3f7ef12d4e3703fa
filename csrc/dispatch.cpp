#include <cstring>

#include "kernels.h"

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace kb {

std::vector<const char*> available_kernels() {
  std::vector<const char*> names = {generic::kKernels.name};
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    names.push_back(avx2::kKernels.name);
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      names.push_back(avx512::kKernels.name);
  }
#endif
#if defined(__aarch64__)
#if defined(__linux__)
  if (getauxval(AT_HWCAP) & HWCAP_ASIMD) names.push_back(neon::kKernels.name);
#else
  names.push_back(neon::kKernels.name);  // Advanced SIMD is part of every ARMv8-A core
#endif
#endif
  return names;
}

namespace {

const Kernels* by_name(const char* name) {
  const Kernels* all[] = {
      &generic::kKernels,
#if defined(__x86_64__) || defined(_M_X64)
      &avx2::kKernels,
      &avx512::kKernels,
#endif
#if defined(__aarch64__)
      &neon::kKernels,
#endif
  };
  for (const Kernels* k : all)
    if (std::strcmp(k->name, name) == 0) return k;
  return nullptr;
}

const Kernels* g_selected = by_name(available_kernels().back());

}  // namespace

const Kernels& kernels() { return *g_selected; }

bool select_kernels(const char* name) {
  for (const char* n : available_kernels())
    if (std::strcmp(n, name) == 0) {
      g_selected = by_name(n);
      return true;
    }
  return false;
}

}  // namespace kb
