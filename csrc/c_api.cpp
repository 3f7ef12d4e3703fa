// The C ABI (kboost.h) over kb::Engine, kb::HintLink and kb::Processor.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>

#include "engine.h"
#include "hint_link.h"
#include "kboost.h"
#include "processor.h"

struct kb_model {
  std::shared_ptr<const kb::Model> model;
};

struct kb_engine {
  std::unique_ptr<kb::Engine> engine;
};

struct kb_link {
  std::shared_ptr<kb::HintLink> link;
};

struct kb_processor {
  std::unique_ptr<kb::Processor> processor;
};

namespace {

void set_error(char* error, size_t size, const char* message) {
  if (error && size) std::snprintf(error, size, "%s", message);
}

}  // namespace

namespace {

// Shared by kb_model_create and kb_engine_create: the checked config and
// tensors, packed into a model.
std::shared_ptr<const kb::Model> make_model(const char* what, const kb_config* config,
                                            const kb_tensor* tensors, int32_t n_tensors) {
  if (!config || (n_tensors > 0 && !tensors))
    throw std::invalid_argument(std::string(what) + ": config and tensors are required");
  if (config->role < KB_ROLE_SMALL || config->role > KB_ROLE_BOOSTED)
    throw std::invalid_argument(std::string(what) + ": unknown role");
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
  return std::make_shared<const kb::Model>(c, map);
}

// Runs make(), turning any exception into NULL and a message.
template <typename Make>
auto guarded(const char* what, char* error, size_t error_size, Make make) -> decltype(make()) {
  try {
    return make();
  } catch (const std::exception& e) {
    set_error(error, error_size, e.what());
  } catch (...) {
    set_error(error, error_size, (std::string(what) + ": unknown error").c_str());
  }
  return nullptr;
}

}  // namespace

extern "C" {

int kb_abi_version(void) { return KB_ABI_VERSION; }

const char* kb_simd(void) { return kb::kernels().name; }

int kb_select_simd(const char* name) { return name && kb::select_kernels(name) ? 1 : 0; }


kb_model* kb_model_create(const kb_config* config, const kb_tensor* tensors, int32_t n_tensors,
                          char* error, size_t error_size) {
  return guarded("kb_model_create", error, error_size, [&] {
    return new kb_model{make_model("kb_model_create", config, tensors, n_tensors)};
  });
}

size_t kb_model_weight_bytes(const kb_model* model) {
  return model ? model->model->weight_bytes() : 0;
}

void kb_model_destroy(kb_model* model) { delete model; }

kb_engine* kb_engine_create(const kb_config* config, const kb_tensor* tensors, int32_t n_tensors,
                            char* error, size_t error_size) {
  return guarded("kb_engine_create", error, error_size, [&] {
    auto model = make_model("kb_engine_create", config, tensors, n_tensors);
    return new kb_engine{std::make_unique<kb::Engine>(std::move(model))};
  });
}

kb_engine* kb_engine_create_from_model(const kb_model* model, char* error, size_t error_size) {
  return guarded("kb_engine_create_from_model", error, error_size, [&]() -> kb_engine* {
    if (!model) throw std::invalid_argument("kb_engine_create_from_model: model is NULL");
    return new kb_engine{std::make_unique<kb::Engine>(model->model)};
  });
}

size_t kb_engine_state_bytes(const kb_engine* engine) {
  return engine ? engine->engine->state_bytes() : 0;
}

int kb_engine_process(kb_engine* engine, const float* input, const float* hint, float* output,
                      float* hint_out) {
  if (!engine || !input || !output) return -1;
  if (hint && engine->engine->any_delay()) return -1;  // its hints come with ages
  const bool boosted = engine->engine->config().role == kb::Role::kBoosted;
  const bool ok = engine->engine->process(input, boosted ? hint : nullptr, output,
                                         engine->engine->makes_hints() ? hint_out : nullptr);
  return ok ? 0 : 1;
}

int kb_engine_process_aged(kb_engine* engine, const float* input, const float* hints,
                           const int32_t* ages, int32_t count, float* output) {
  if (!engine || !input || !output || count < 0 || (count > 0 && (!hints || !ages)) ||
      !engine->engine->any_delay())
    return -1;
  // Later hints of an age replace earlier ones, so the last kMax are all that count.
  constexpr int32_t kMax = 64;
  kb::HintArrival arrivals[kMax];
  const int32_t first = count > kMax ? count - kMax : 0;
  const std::size_t hint_n =
      static_cast<std::size_t>(engine->engine->config().hint_channels) * KB_BINS;
  for (int32_t i = first; i < count; ++i) arrivals[i - first] = {hints + i * hint_n, ages[i]};
  return engine->engine->process(input, arrivals, count - first, output) ? 0 : 1;
}

void kb_engine_reset(kb_engine* engine) {
  if (engine) engine->engine->reset();
}

kb_stats kb_engine_stats(const kb_engine* engine) {
  kb_stats s{0, 0};
  if (engine) {
    s.chunks = engine->engine->stats().chunks;
    s.nonfinite_resets = engine->engine->stats().nonfinite_resets;
  }
  return s;
}

void kb_engine_destroy(kb_engine* engine) { delete engine; }

kb_link* kb_link_create(int32_t channels, int32_t hint_channels, int32_t delay) {
  try {
    return new kb_link{std::make_shared<kb::HintLink>(channels, hint_channels, delay)};
  } catch (...) {
    return nullptr;
  }
}

kb_link* kb_link_create_any_delay(int32_t channels, int32_t hint_channels, int32_t max_age) {
  if (max_age < 1 || max_age > kb::kMaxAge) return nullptr;
  try {
    return new kb_link{std::make_shared<kb::HintLink>(channels, hint_channels, 0, max_age)};
  } catch (...) {
    return nullptr;
  }
}

int kb_link_next_chunk(kb_link* link, int64_t* seq, float* chunk) {
  if (!link || !seq || !chunk) return 0;
  return link->link->next_chunk(seq, chunk) ? 1 : 0;
}

int kb_link_deliver(kb_link* link, int64_t seq, const float* hint) {
  if (!link || !hint) return 0;
  return link->link->deliver(seq, hint) ? 1 : 0;
}

int64_t kb_link_now(const kb_link* link) { return link ? link->link->now() : -1; }

void kb_link_destroy(kb_link* link) { delete link; }

namespace {

bool to_params(const kb_params& in, kb::Params* out) {
  if (!(in.gain_db >= -60.0 && in.gain_db <= 12.0) || !(in.wet >= 0.0 && in.wet <= 1.0) ||
      in.source < 0 || in.source > 2)
    return false;
  out->gain_db = in.gain_db;
  out->wet = in.wet;
  out->source = in.source;
  out->bypass = in.bypass != 0;
  out->boost = in.boost != 0;
  return true;
}

}  // namespace

kb_processor* kb_processor_create(kb_engine* engine, kb_link* link, kb_engine* fallback,
                                  int32_t fallback_after, const kb_params* initial, char* error,
                                  size_t error_size) {
  try {
    if (!engine) throw std::invalid_argument("kb_processor_create: an engine is required");
    if (engine->engine->config().role == kb::Role::kLarge)
      throw std::invalid_argument("kb_processor_create: a large model runs on the server");
    kb::Params p;
    if (initial && !to_params(*initial, &p))
      throw std::invalid_argument("kb_processor_create: parameters out of range");
    if (p.source > engine->engine->config().sources)
      throw std::invalid_argument("kb_processor_create: no such source");
    // Validate everything before taking the engines over.
    if (fallback) {
      const kb::EngineConfig& f = fallback->engine->config();
      const kb::EngineConfig& e = engine->engine->config();
      if (f.role != kb::Role::kSmall) throw std::invalid_argument("the fallback must be a small model");
      if (f.channels != e.channels || f.sources != e.sources)
        throw std::invalid_argument("the fallback has other channels or sources than the engine");
      if (fallback_after < 1) throw std::invalid_argument("fallback after must be 1 or more chunks");
      if (!link) throw std::invalid_argument("a fallback needs a hint link");
    }
    if (link) {
      const kb::EngineConfig& e = engine->engine->config();
      const kb::HintLink& l = *link->link;
      if (e.role != kb::Role::kBoosted || l.channels() != e.channels ||
          l.hint_channels() != e.hint_channels || l.delay() != e.delay ||
          l.max_age() != e.max_age)
        throw std::invalid_argument("the hint link does not fit the engine (a boosted model's "
                                    "channels, hint channels and delay or max_age)");
    }
    std::unique_ptr<kb::Fallback> f;
    if (fallback) f = std::make_unique<kb::Fallback>(std::move(fallback->engine), fallback_after);
    auto* out = new kb_processor{std::make_unique<kb::Processor>(
        std::move(engine->engine), link ? link->link : nullptr, std::move(f), p)};
    delete engine;
    delete fallback;
    return out;
  } catch (const std::exception& e) {
    set_error(error, error_size, e.what());
  } catch (...) {
    set_error(error, error_size, "kb_processor_create: unknown error");
  }
  return nullptr;
}

void kb_processor_process(kb_processor* processor, const float* input, float* mix,
                          float* sources) {
  if (processor && input && mix) processor->processor->process(input, mix, sources);
}

int kb_processor_set_params(kb_processor* processor, const kb_params* params) {
  kb::Params p;
  if (!processor || !params || !to_params(*params, &p) ||
      p.source > processor->processor->sources())
    return -1;
  processor->processor->set_params(p);
  return 0;
}

kb_processor_stats kb_processor_get_stats(const kb_processor* processor) {
  kb_processor_stats s{};
  if (!processor) return s;
  const kb::ProcessorStats p = processor->processor->stats();
  s.chunks = p.chunks;
  s.hints_used = p.hints_used;
  s.chunks_on_small = p.chunks_on_small;
  s.nonfinite_resets = p.nonfinite_resets;
  s.nonfinite_inputs = p.nonfinite_inputs;
  if (const kb::HintLink* l = processor->processor->link()) {
    const kb::LinkCounters c = l->counters();
    s.hints_on_time = c.on_time;
    s.hints_late = c.late;
    s.hints_lost = c.lost;
    s.chunks_queued = c.queued;
    s.chunks_dropped = c.send_dropped;
  }
  return s;
}

int kb_processor_hint_ages(const kb_processor* processor, uint64_t* counts, int32_t n) {
  if (!processor || !counts || n < 0) return -1;
  const kb::ProcessorStats p = processor->processor->stats();
  const int filled = std::min<int>(n, kb::kMaxAge + 1);
  for (int a = 0; a < filled; ++a) counts[a] = p.hints_by_age[a];
  return filled;
}

void kb_processor_reset(kb_processor* processor) {
  if (processor) processor->processor->reset();
}

void kb_processor_destroy(kb_processor* processor) { delete processor; }

}  // extern "C"
