#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "no_denormals.h"

namespace kb {
namespace {

constexpr int F = kBins;

bool all_finite(const float* x, std::size_t n) {
  // x - x is 0 for finite x and NaN otherwise; one branch at the end.
  float acc = 0.f;
  for (std::size_t i = 0; i < n; ++i) acc += x[i] - x[i];
  return acc == 0.f;
}

void check_config(const EngineConfig& c) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("engine config: " + m); };
  if (c.channels != 1 && c.channels != 2) fail("channels must be 1 or 2");
  if (c.sources != 1 && c.sources != 2) fail("sources must be 1 or 2");
  if (c.dim < 1 || c.hidden < 1 || c.blocks < 1) fail("dim, hidden and blocks must be >= 1");
  if (c.attention_heads < 0) fail("attention_heads must be >= 0");
  if (c.attention_heads &&
      (c.dim % c.attention_heads || c.attention_e < 1 || c.attention_frames < 1))
    fail("attention: dim must divide by heads; e and frames must be >= 1");
  if (c.role == Role::kBoosted) {
    if (c.hint_channels < 1 || c.delay < 0 || c.delay > 8) fail("boosted: bad hint_channels/delay");
    if (c.blocks < 2) fail("boosted: needs blocks >= 2");
    if (c.merge_heads < 1 || c.dim % c.merge_heads || c.merge_e < 1 || c.merge_frames < 1)
      fail("boosted: bad merge heads/e/frames");
  }
  if (c.role == Role::kLarge && c.attention_heads == 0) fail("large: needs attention_heads > 0");
  if (c.role == Role::kSmall && c.hint_channels != 0) fail("small: hint_channels must be 0");
}

}  // namespace

// ---- GridBlock -------------------------------------------------------------

GridBlock::GridBlock(const Weights& w, const EngineConfig& cfg)
    : dim_(cfg.dim),
      hidden_(cfg.hidden),
      intra_norm_(w / "intra_norm", cfg.dim),
      inter_norm_(w / "inter_norm", cfg.dim),
      intra_lstm_(w / "intra_lstm", cfg.dim, cfg.hidden),
      intra_proj_(w / "intra_proj", 2 * cfg.hidden, cfg.dim),
      inter_proj_(w / "inter_proj", cfg.hidden, cfg.dim),
      inter_lstm_(w / "inter_lstm", cfg.dim, cfg.hidden),
      has_attention_(cfg.attention_heads > 0),
      normed_(static_cast<std::size_t>(F) * cfg.dim),
      lstm_out_(static_cast<std::size_t>(F) * 2 * cfg.hidden),
      update_(static_cast<std::size_t>(F) * cfg.dim) {
  if (has_attention_)
    attention_ = FrameAttention(w / "attention", cfg.dim, cfg.attention_heads, cfg.attention_e,
                                cfg.attention_frames);
}

void GridBlock::reset() {
  inter_lstm_.reset();
  attention_.reset();
}

void GridBlock::step(float* z, StageClock& clock, int index) {
  intra_norm_.forward(z, normed_.data(), F);
  clock.lap("norm", index);
  intra_lstm_.forward(normed_.data(), lstm_out_.data());
  clock.lap("frequency BiLSTM", index);
  intra_proj_.forward(lstm_out_.data(), F, z, /*accumulate=*/true);  // residual
  inter_norm_.forward(z, normed_.data(), F);
  clock.lap("projection + norm", index);
  inter_lstm_.step(normed_.data(), lstm_out_.data());
  clock.lap("time LSTM", index);
  inter_proj_.forward(lstm_out_.data(), F, z, /*accumulate=*/true);
  clock.lap("projection", index);
  if (has_attention_) {
    attention_.step(z, z, update_.data(), &clock, index);
    for (int i = 0; i < F * dim_; ++i) z[i] += update_[i];
  }
}

// ---- Merge -----------------------------------------------------------------

Merge::Merge(const Weights& w, const EngineConfig& cfg)
    : dim_(cfg.dim),
      delay_(cfg.delay),
      scale_(w / "scale", cfg.hint_channels, cfg.dim),
      shift_(w / "shift", cfg.hint_channels, cfg.dim),
      attention_(w / "attention", cfg.dim, cfg.merge_heads, cfg.merge_e, cfg.merge_frames),
      past_(static_cast<std::size_t>(cfg.delay) * F * cfg.dim),
      film_scale_(static_cast<std::size_t>(F) * cfg.dim),
      aligned_(static_cast<std::size_t>(F) * cfg.dim),
      update_(static_cast<std::size_t>(F) * cfg.dim) {}

void Merge::reset() {
  past_.zero();
  next_ = 0;
  attention_.reset();
}

void Merge::step(float* z, const float* hint, StageClock& clock, int index) {
  const int n = F * dim_;
  // The feature the hint describes: frame t-d (the oldest in the ring).
  float* past = delay_ ? past_.data() + static_cast<std::size_t>(next_) * n : z;
  scale_.forward(hint, F, film_scale_.data());
  shift_.forward(hint, F, aligned_.data());
  for (int i = 0; i < n; ++i) aligned_[i] += past[i] * film_scale_[i];
  if (delay_) {
    std::memcpy(past, z, sizeof(float) * n);
    next_ = (next_ + 1) % delay_;
  }
  clock.lap("merge: FiLM", index);
  attention_.step(z, aligned_.data(), update_.data(), &clock, index, /*merge=*/true);
  for (int i = 0; i < n; ++i) z[i] += update_[i];
}

// ---- Engine ----------------------------------------------------------------

Engine::Engine(const EngineConfig& cfg, const TensorMap& tensors)
    : cfg_((check_config(cfg), cfg)),
      analysis_(cfg.channels),
      synthesis_(cfg.spec_channels() / 2) {
  const bool boosted = cfg.role == Role::kBoosted;
  const Weights root(tensors);
  const Weights net = boosted ? root / "small" : root;
  encoder_ = CausalConv3x3(net / "encoder", 2 * cfg.channels, cfg.dim, false);
  encoder_norm_ = ChannelNorm(net / "encoder_norm", cfg.dim);
  for (int b = 0; b < cfg.blocks; ++b)
    blocks_.emplace_back(net / "blocks" / std::to_string(b), cfg);
  if (boosted)
    for (int b = 0; b + 1 < cfg.blocks; ++b)
      merges_.emplace_back(root / "merges" / std::to_string(b), cfg);
  decoder_ = CausalConv3x3(net / "decoder", cfg.dim, cfg.spec_channels(), true);
  if (cfg.role == Role::kLarge && cfg.hint_channels > 0)
    hint_generator_ = CausalConv3x3(root / "hint_generator", cfg.spec_channels(),
                                    cfg.hint_channels, false);
  bins_in_ = Buffer(static_cast<std::size_t>(cfg.channels) * 2 * kPadded);
  features_ = Buffer(static_cast<std::size_t>(F) * 2 * cfg.channels);
  bins_out_ = Buffer(static_cast<std::size_t>(cfg.spec_channels()) * F);
  z_ = Buffer(static_cast<std::size_t>(F) * cfg.dim);
  maps_ = Buffer(static_cast<std::size_t>(F) * cfg.spec_channels());
  hint_rows_ = Buffer(static_cast<std::size_t>(F) * std::max(cfg.hint_channels, 1));
  hint_made_ = Buffer(static_cast<std::size_t>(F) * std::max(cfg.hint_channels, 1));
}

void Engine::reset() {
  analysis_.reset();
  synthesis_.reset();
  encoder_.reset();
  for (auto& b : blocks_) b.reset();
  for (auto& m : merges_) m.reset();
  decoder_.reset();
  hint_generator_.reset();
}

bool Engine::process(const float* input, const float* hint, float* output, float* hint_out) {
  const std::size_t out_n = static_cast<std::size_t>(cfg_.spec_channels() / 2) * kChunk;
  const std::size_t hint_n = static_cast<std::size_t>(cfg_.hint_channels) * F;
  ++stats_.chunks;
  const ScopedNoDenormals flush;
  bool ok = all_finite(input, static_cast<std::size_t>(cfg_.channels) * kChunk) &&
            (hint == nullptr || all_finite(hint, hint_n));
  if (ok) {
    step(input, hint, output, hint_out);
    ok = all_finite(output, out_n) && (hint_out == nullptr || all_finite(hint_out, hint_n));
  }
  if (!ok) {
    std::memset(output, 0, sizeof(float) * out_n);
    if (hint_out) std::memset(hint_out, 0, sizeof(float) * hint_n);
    reset();
    ++stats_.nonfinite_resets;
  }
  return ok;
}

void Engine::step(const float* input, const float* hint, float* output, float* hint_out) {
  const int m_count = cfg_.channels, s_count = cfg_.sources, hc = cfg_.hint_channels;
  StageClock clock(stage_times_);
  // STFT -> features [bin x (re, im per mic)].
  analysis_.process(input, bins_in_.data());
  for (int m = 0; m < m_count; ++m) {
    const float* re = bins_in_.data() + m * 2 * kPadded;
    const float* im = re + kPadded;
    for (int f = 0; f < F; ++f) {
      features_[f * 2 * m_count + 2 * m] = re[f];
      features_[f * 2 * m_count + 2 * m + 1] = im[f];
    }
  }
  clock.lap("STFT");
  encoder_.step(features_.data(), z_.data());
  encoder_norm_.forward(z_.data(), z_.data(), F);
  clock.lap("encoder");

  if (!merges_.empty()) {
    // Hints arrive as [C_h x bins]; a missing one is zeros, as in training.
    if (hint) {
      for (int c = 0; c < hc; ++c)
        for (int f = 0; f < F; ++f) hint_rows_[f * hc + c] = hint[c * F + f];
    } else {
      hint_rows_.zero();
    }
  }
  for (std::size_t b = 0; b < blocks_.size(); ++b) {
    blocks_[b].step(z_.data(), clock, static_cast<int>(b));
    if (b < merges_.size()) {
      merges_[b].step(z_.data(), hint_rows_.data(), clock, static_cast<int>(b));
    }
  }

  decoder_.step(z_.data(), maps_.data());
  clock.lap("decoder");
  const int sc = cfg_.spec_channels();
  for (int p = 0; p < s_count * m_count; ++p) {  // p = s * M + m
    float* re = bins_out_.data() + p * 2 * F;
    float* im = re + F;
    for (int f = 0; f < F; ++f) {
      re[f] = maps_[f * sc + 2 * p];
      im[f] = maps_[f * sc + 2 * p + 1];
    }
  }
  synthesis_.process(bins_out_.data(), output);
  clock.lap("iSTFT");

  if (makes_hints()) {
    hint_generator_.step(maps_.data(), hint_made_.data());
    if (hint_out)
      for (int c = 0; c < hc; ++c)
        for (int f = 0; f < F; ++f) hint_out[c * F + f] = hint_made_[f * hc + c];
    clock.lap("hint generator");
  }
}

}  // namespace kb
