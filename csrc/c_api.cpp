// The C ABI (kboost.h) over kb::Engine.
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

#include "engine.h"
#include "kboost.h"

struct kb_engine {
  kb::Engine engine;
};

namespace {

void set_error(char* error, size_t size, const char* message) {
  if (error && size) std::snprintf(error, size, "%s", message);
}

}  // namespace

extern "C" {

int kb_abi_version(void) { return KB_ABI_VERSION; }

const char* kb_simd(void) { return kb::kernels().name; }

kb_engine* kb_engine_create(const kb_config* config, const kb_tensor* tensors, int32_t n_tensors,
                            char* error, size_t error_size) {
  if (!config || (n_tensors > 0 && !tensors)) {
    set_error(error, error_size, "kb_engine_create: config and tensors are required");
    return nullptr;
  }
  if (config->role < KB_ROLE_SMALL || config->role > KB_ROLE_BOOSTED) {
    set_error(error, error_size, "kb_engine_create: unknown role");
    return nullptr;
  }
  try {
    kb::EngineConfig c;
    c.role = static_cast<kb::Role>(config->role);
#define KB_COPY(field) c.field = config->field;
    KB_ENGINE_CONFIG_INT_FIELDS(KB_COPY)
#undef KB_COPY
    kb::TensorMap map;
    for (int32_t i = 0; i < n_tensors; ++i) {
      const kb_tensor& t = tensors[i];
      if (!t.name || !t.data || t.ndim < 0 || (t.ndim > 0 && !t.shape))
        throw std::invalid_argument("tensor " + std::to_string(i) + " is malformed");
      map[t.name] = kb::TensorRef{t.data, std::vector<int64_t>(t.shape, t.shape + t.ndim)};
    }
    return new kb_engine{kb::Engine(c, map)};
  } catch (const std::exception& e) {
    set_error(error, error_size, e.what());
  } catch (...) {
    set_error(error, error_size, "kb_engine_create: unknown error");
  }
  return nullptr;
}

int kb_engine_process(kb_engine* engine, const float* input, const float* hint, float* output,
                      float* hint_out) {
  if (!engine || !input || !output) return -1;
  const bool boosted = engine->engine.config().role == kb::Role::kBoosted;
  const bool ok = engine->engine.process(input, boosted ? hint : nullptr, output,
                                         engine->engine.makes_hints() ? hint_out : nullptr);
  return ok ? 0 : 1;
}

void kb_engine_reset(kb_engine* engine) {
  if (engine) engine->engine.reset();
}

kb_stats kb_engine_stats(const kb_engine* engine) {
  kb_stats s{0, 0};
  if (engine) {
    s.chunks = engine->engine.stats().chunks;
    s.nonfinite_resets = engine->engine.stats().nonfinite_resets;
  }
  return s;
}

void kb_engine_destroy(kb_engine* engine) { delete engine; }

}  // extern "C"
