#include "processor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "signal_path.h"

namespace kb {

namespace {

// (n + 1) / 128 for n in 0..127: a ramp that reaches the new value at the chunk's end.
void fill_ramp(Buffer& ramp) {
  for (int n = 0; n < kChunk; ++n) ramp[n] = static_cast<float>(n + 1) / kChunk;
}

}  // namespace

// ---------------------------------------------------------------- OutputAligner

OutputAligner::OutputAligner(int sources, int channels, int chunks)
    : sources_(sources), size_(channels * kChunk), decay_(std::exp(-1.0 / chunks)) {
  if (sources < 1 || sources > 2) throw std::invalid_argument("OutputAligner: 1 or 2 sources");
}

void OutputAligner::reset() {
  std::memset(cross_, 0, sizeof(cross_));
  std::memset(energy_, 0, sizeof(energy_));
  fitted_ = false;
}

void OutputAligner::update(const float* reference, const float* other) {
  for (int i = 0; i < sources_; ++i) {
    for (int j = 0; j < sources_; ++j) {
      const float* r = reference + i * size_;
      const float* o = other + j * size_;
      double sum = 0.0;
      for (int n = 0; n < size_; ++n) sum += static_cast<double>(r[n]) * o[n];
      cross_[i][j] = cross_[i][j] * decay_ + sum;
    }
  }
  for (int j = 0; j < sources_; ++j) {
    const float* o = other + j * size_;
    double sum = 0.0;
    for (int n = 0; n < size_; ++n) sum += static_cast<double>(o[n]) * o[n];
    energy_[j] = energy_[j] * decay_ + sum;
  }
  fitted_ = false;
}

void OutputAligner::fit() {
  fitted_ = true;
  order_[0] = 0;
  order_[1] = 1;
  gains_[0] = gains_[1] = 1.0;
  for (int j = 0; j < sources_; ++j)
    if (!(energy_[j] > 1e-12)) return;  // the other model has made no sound yet
  if (sources_ == 2) {
    // The reference energy each order's fitted gains account for.
    auto explained = [&](int a, int b) {
      return cross_[0][a] * cross_[0][a] / energy_[a] + cross_[1][b] * cross_[1][b] / energy_[b];
    };
    if (explained(1, 0) > explained(0, 1)) {
      order_[0] = 1;
      order_[1] = 0;
    }
  }
  // A near-silent small-model output must not be blown up to the boosted level.
  for (int i = 0; i < sources_; ++i)
    gains_[i] = std::clamp(cross_[i][order_[i]] / energy_[order_[i]], -kMaxGain, kMaxGain);
}

void OutputAligner::mapping(int* order, double* gains) const {
  for (int i = 0; i < sources_; ++i) {
    order[i] = order_[i];
    gains[i] = gains_[i];
  }
}

void OutputAligner::apply(const float* other, float* out) {
  if (!fitted_) fit();
  for (int i = 0; i < sources_; ++i) {
    const float* o = other + order_[i] * size_;
    float* y = out + i * size_;
    for (int n = 0; n < size_; ++n) y[n] = static_cast<float>(o[n] * gains_[i]);
  }
}

// ---------------------------------------------------------------- Fallback

Fallback::Fallback(std::unique_ptr<Engine> small, int after)
    : small_(std::move(small)),
      after_(after),
      aligner_(small_ ? small_->config().sources : 1, small_ ? small_->config().channels : 1),
      small_out_(small_ ? static_cast<std::size_t>(small_->config().sources) *
                              small_->config().channels * kChunk
                        : 0),
      aligned_(small_out_.size()) {
  if (!small_ || small_->config().role != Role::kSmall)
    throw std::invalid_argument("the fallback must be a small model");
  if (after < 1) throw std::invalid_argument("fallback after must be 1 or more chunks");
  small_out_.zero();
  aligned_.zero();
}

void Fallback::reset() {
  small_->reset();
  aligner_.reset();
  missing_ = 0;
  weight_ = 0.f;
  chunks_on_small_.store(0, std::memory_order_relaxed);
}

void Fallback::apply(const float* chunk, bool hint_arrived, float* out) {
  small_->process(chunk, nullptr, small_out_.data(), nullptr);
  missing_ = hint_arrived ? 0 : std::min(missing_ + 1, after_);  // saturates: never overflows
  const float target = missing_ >= after_ ? 1.f : 0.f;
  if (target == 0.f)
    aligner_.update(out, small_out_.data());  // learn the mapping while the boosted model plays
  else
    chunks_on_small_.fetch_add(1, std::memory_order_relaxed);
  if (target == 0.f && weight_ == 0.f) return;
  aligner_.apply(small_out_.data(), aligned_.data());
  const std::size_t n = aligned_.size();
  if (target == weight_) {
    std::memcpy(out, aligned_.data(), sizeof(float) * n);
  } else {
    const float step = target - weight_;
    for (std::size_t i = 0; i < n; ++i) {
      const float w = weight_ + step * (static_cast<float>(i % kChunk + 1) / kChunk);
      out[i] += w * (aligned_[i] - out[i]);
    }
  }
  weight_ = target;
}

// ---------------------------------------------------------------- Processor

Processor::Processor(std::unique_ptr<Engine> engine, std::shared_ptr<HintLink> link,
                     std::unique_ptr<Fallback> fallback, const Params& initial)
    : engine_(std::move(engine)), link_(std::move(link)), fallback_(std::move(fallback)) {
  if (!engine_) throw std::invalid_argument("Processor: no engine");
  const EngineConfig& c = engine_->config();
  if (c.sources > 2) throw std::invalid_argument("Processor: at most 2 sources");
  if (link_) {
    if (c.role != Role::kBoosted) throw std::invalid_argument("Processor: hints need a boosted model");
    if (link_->channels() != c.channels || link_->hint_channels() != c.hint_channels ||
        link_->delay() != c.delay || link_->max_age() != c.max_age)
      throw std::invalid_argument("Processor: the hint link's channels, hint channels, delay or "
                                  "max_age differ from the model's");
  }
  if (fallback_ && !link_) throw std::invalid_argument("Processor: a fallback needs a hint link");
  channels_ = c.channels;
  sources_ = c.sources;
  out_ = Buffer(static_cast<std::size_t>(sources_) * channels_ * kChunk);
  hint_ = Buffer(static_cast<std::size_t>(std::max(1, c.hint_channels)) * kBins *
                 std::max(1, c.max_age));
  ages_.assign(static_cast<std::size_t>(std::max(1, c.max_age)), 0);
  arrivals_.assign(ages_.size(), HintArrival{nullptr, 0});
  dry_line_ = Buffer(static_cast<std::size_t>(channels_) * (kLookahead + kChunk));
  ramp_ = Buffer(kChunk);
  clean_ = Buffer(static_cast<std::size_t>(channels_) * kChunk);
  out_.zero();
  hint_.zero();
  dry_line_.zero();
  fill_ramp(ramp_);
  set_params(initial);
  current_ = initial;
  last_ = targets(initial);
}

void Processor::reset() {
  engine_->reset();
  if (fallback_) fallback_->reset();
  if (link_) link_->reset();
  dry_line_.zero();
  t_.store(0, std::memory_order_relaxed);
  hints_used_.store(0, std::memory_order_relaxed);
  for (auto& n : hints_by_age_) n.store(0, std::memory_order_relaxed);
  nonfinite_inputs_.store(0, std::memory_order_relaxed);
}

void Processor::set_params(const Params& p) {
  params_seq_.fetch_add(1, std::memory_order_acq_rel);  // odd: being written
  std::atomic_thread_fence(std::memory_order_release);
  gain_db_.store(p.gain_db, std::memory_order_relaxed);
  wet_.store(p.wet, std::memory_order_relaxed);
  source_.store(p.source, std::memory_order_relaxed);
  bypass_.store(p.bypass, std::memory_order_relaxed);
  boost_.store(p.boost, std::memory_order_relaxed);
  params_seq_.fetch_add(1, std::memory_order_release);
}

Params Processor::params() const {
  Params p;
  p.gain_db = gain_db_.load(std::memory_order_relaxed);
  p.wet = wet_.load(std::memory_order_relaxed);
  p.source = source_.load(std::memory_order_relaxed);
  p.bypass = bypass_.load(std::memory_order_relaxed);
  p.boost = boost_.load(std::memory_order_relaxed);
  return p;
}

Params Processor::read_params() {
  // Never waits: a change caught mid-write is picked up at the next chunk.
  const uint32_t before = params_seq_.load(std::memory_order_acquire);
  if (before & 1u) return current_;
  const Params p = params();
  std::atomic_thread_fence(std::memory_order_acquire);
  if (params_seq_.load(std::memory_order_relaxed) != before) return current_;
  current_ = p;
  return p;
}

Processor::Targets Processor::targets(const Params& p) const {
  Targets t;
  for (int s = 0; s < sources_; ++s) t.weights[s] = p.source == 0 || p.source == s + 1 ? 1.0 : 0.0;
  t.wet = p.bypass ? 0.0 : p.wet;
  t.gain = std::pow(10.0, p.gain_db / 20.0);
  return t;
}

void Processor::process(const float* input, float* mix, float* sources) {
  // NaN or Inf never travels on: not to the server, the model or the dry path.
  const int samples = channels_ * kChunk;
  bool finite = true;
  for (int i = 0; i < samples; ++i) finite &= std::isfinite(input[i]);
  if (!finite) {
    for (int i = 0; i < samples; ++i) clean_[i] = std::isfinite(input[i]) ? input[i] : 0.f;
    input = clean_.data();
    nonfinite_inputs_.fetch_add(1, std::memory_order_relaxed);
  }
  const Params p = read_params();
  const int64_t t = t_.load(std::memory_order_relaxed);
  bool arrived = false;
  if (link_ && link_->max_age()) {
    link_->send(t, input);
    const int count = link_->take_fresh(t, hint_.data(), ages_.data());  // always, as below
    arrived = count > 0;
    const int used = p.boost ? count : 0;
    for (int i = 0; i < used; ++i) {
      arrivals_[i] = {hint_.data() + static_cast<std::size_t>(i) * link_->hint_size(), ages_[i]};
      hints_by_age_[ages_[i]].fetch_add(1, std::memory_order_relaxed);
    }
    hints_used_.fetch_add(static_cast<uint64_t>(used), std::memory_order_relaxed);
    engine_->process(input, arrivals_.data(), used, out_.data());
  } else {
    const float* hint = nullptr;
    if (link_) {
      link_->send(t, input);
      arrived = link_->take(t, hint_.data());  // always taken, so the accounting stays exact
    }
    if (arrived && p.boost) {  // the fallback watches the link, not the boost switch
      hint = hint_.data();
      hints_used_.fetch_add(1, std::memory_order_relaxed);
      hints_by_age_[link_->delay()].fetch_add(1, std::memory_order_relaxed);
    }
    engine_->process(input, hint, out_.data(), nullptr);
  }
  // No hint can exist for the first chunks: those do not count as missing.
  if (fallback_) fallback_->apply(input, arrived || t < link_->first_hint_chunk(), out_.data());

  // The model's output lags its input by the look-ahead; so does the dry path.
  const int line = kLookahead + kChunk;
  for (int c = 0; c < channels_; ++c) {
    float* d = dry_line_.data() + c * line;
    std::memmove(d, d + kChunk, sizeof(float) * kLookahead);
    std::memcpy(d + kLookahead, input + c * kChunk, sizeof(float) * kChunk);
  }

  const Targets next = targets(p);
  const float wet0 = static_cast<float>(last_.wet), wet_step = static_cast<float>(next.wet - last_.wet);
  const float gain0 = static_cast<float>(last_.gain);
  const float gain_step = static_cast<float>(next.gain - last_.gain);
  float w0[2], w_step[2];
  for (int s = 0; s < sources_; ++s) {
    w0[s] = static_cast<float>(last_.weights[s]);
    w_step[s] = static_cast<float>(next.weights[s]) - w0[s];
  }
  const std::size_t per_source = static_cast<std::size_t>(channels_) * kChunk;
  for (int c = 0; c < channels_; ++c) {
    const float* dry = dry_line_.data() + c * line;
    float* y = mix + c * kChunk;
    for (int n = 0; n < kChunk; ++n) {
      const float r = ramp_[n];
      float mixed = 0.f;
      for (int s = 0; s < sources_; ++s)
        mixed += (w0[s] + w_step[s] * r) * out_[s * per_source + c * kChunk + n];
      const float wet = wet0 + wet_step * r;
      const float gain = gain0 + gain_step * r;
      y[n] = gain * (wet * mixed + (1.f - wet) * dry[n]);
    }
  }
  last_ = next;
  if (sources) std::memcpy(sources, out_.data(), sizeof(float) * out_.size());
  t_.store(t + 1, std::memory_order_relaxed);
}

ProcessorStats Processor::stats() const {
  ProcessorStats s;
  s.chunks = static_cast<uint64_t>(t_.load(std::memory_order_relaxed));
  s.hints_used = hints_used_.load(std::memory_order_relaxed);
  s.chunks_on_small = fallback_ ? fallback_->chunks_on_small() : 0;
  s.nonfinite_resets = engine_->stats().nonfinite_resets;
  s.nonfinite_inputs = nonfinite_inputs_.load(std::memory_order_relaxed);
  for (int a = 0; a <= kMaxAge; ++a)
    s.hints_by_age[a] = hints_by_age_[a].load(std::memory_order_relaxed);
  return s;
}

}  // namespace kb
