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
    if (c.max_age < 0 || c.max_age > kMaxAge ||
        (c.max_age && (c.delay || c.merge_frames <= c.max_age)))
      fail("boosted: max_age must be 0..8, with delay 0 and merge_frames above it");
  }
  if (c.role == Role::kLarge && c.attention_heads == 0) fail("large: needs attention_heads > 0");
  if (c.role == Role::kSmall && c.hint_channels != 0) fail("small: hint_channels must be 0");
  if (c.role != Role::kBoosted && c.max_age != 0) fail("max_age is for boosted models");
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
      has_attention_(cfg.attention_heads > 0) {
  if (has_attention_)
    attention_ = FrameAttention(w / "attention", cfg.dim, cfg.attention_heads, cfg.attention_e,
                                cfg.attention_frames);
}

GridBlock::State GridBlock::new_state() const {
  State s{intra_lstm_.new_state(), inter_lstm_.new_state(), {}, {}, {}, {}};
  if (has_attention_) s.attention = attention_.new_state();
  s.normed = Buffer(static_cast<std::size_t>(F) * dim_);
  s.lstm_out = Buffer(static_cast<std::size_t>(F) * 2 * hidden_);
  s.update = Buffer(static_cast<std::size_t>(F) * dim_);
  return s;
}

void GridBlock::State::reset() {
  inter_lstm.reset();
  attention.reset();
}

void GridBlock::step(State& s, float* z, StageClock& clock, int index) const {
  float* normed = s.normed.data();
  float* lstm_out = s.lstm_out.data();
  intra_norm_.forward(z, normed, F);
  clock.lap("norm", index);
  intra_lstm_.forward(s.intra_lstm, normed, lstm_out);
  clock.lap("frequency BiLSTM", index);
  intra_proj_.forward(lstm_out, F, z, /*accumulate=*/true);  // residual
  inter_norm_.forward(z, normed, F);
  clock.lap("projection + norm", index);
  inter_lstm_.step(s.inter_lstm, normed, lstm_out);
  clock.lap("time LSTM", index);
  inter_proj_.forward(lstm_out, F, z, /*accumulate=*/true);
  clock.lap("projection", index);
  if (has_attention_) {
    attention_.step(s.attention, z, z, s.update.data(), &clock, index);
    for (int i = 0; i < F * dim_; ++i) z[i] += s.update[i];
  }
}

// ---- Merge -----------------------------------------------------------------

Merge::Merge(const Weights& w, const EngineConfig& cfg)
    : dim_(cfg.dim),
      delay_(cfg.delay),
      scale_(w / "scale", cfg.hint_channels, cfg.dim),
      shift_(w / "shift", cfg.hint_channels, cfg.dim),
      attention_(w / "attention", cfg.dim, cfg.merge_heads, cfg.merge_e, cfg.merge_frames) {}

Merge::State Merge::new_state() const {
  const std::size_t n = static_cast<std::size_t>(F) * dim_;
  return {0, Buffer(delay_ * n), Buffer(n), Buffer(n), Buffer(n), attention_.new_state()};
}

void Merge::State::reset() {
  past.zero();
  next = 0;
  attention.reset();
}

void Merge::step(State& s, float* z, const float* hint, StageClock& clock, int index) const {
  const int n = F * dim_;
  float* aligned = s.aligned.data();
  const float* film_scale = s.film_scale.data();
  // The feature the hint describes: frame t-d (the oldest in the ring).
  float* past = delay_ ? s.past.data() + static_cast<std::size_t>(s.next) * n : z;
  scale_.forward(hint, F, s.film_scale.data());
  shift_.forward(hint, F, aligned);
  for (int i = 0; i < n; ++i) aligned[i] += past[i] * film_scale[i];
  if (delay_) {
    std::memcpy(past, z, sizeof(float) * n);
    s.next = (s.next + 1) % delay_;
  }
  clock.lap("merge: FiLM", index);
  attention_.step(s.attention, z, aligned, s.update.data(), &clock, index, /*merge=*/true);
  for (int i = 0; i < n; ++i) z[i] += s.update[i];
}

// ---- AgeMerge --------------------------------------------------------------

AgeMerge::AgeMerge(const Weights& w, const EngineConfig& cfg)
    : dim_(cfg.dim),
      hint_channels_(cfg.hint_channels),
      max_age_(cfg.max_age),
      scale_(w / "scale", cfg.hint_channels, cfg.dim),
      shift_(w / "shift", cfg.hint_channels, cfg.dim),
      attention_(w / "attention", cfg.dim, cfg.merge_heads, cfg.merge_e, cfg.merge_frames),
      age_bias_(static_cast<std::size_t>(cfg.merge_heads) * cfg.merge_frames) {
  const float* bias = w.get("age_bias", {cfg.merge_heads, cfg.merge_frames});
  std::memcpy(age_bias_.data(), bias, sizeof(float) * age_bias_.size());
}

AgeMerge::State AgeMerge::new_state() const {
  const std::size_t n = static_cast<std::size_t>(F) * dim_;
  return {0, Buffer(max_age_ * n), Buffer(n), Buffer(n), Buffer(n), attention_.new_state()};
}

void AgeMerge::State::reset() {
  past.zero();
  next = 0;
  attention.reset();
}

void AgeMerge::step(State& s, float* z, const float* hint_rows, const uint8_t* arrived,
                    StageClock& clock, int index) const {
  const int n = F * dim_;
  float* aligned = s.aligned.data();
  float* film_scale = s.film_scale.data();
  for (int age = 1; age <= max_age_; ++age) {
    if (!arrived[age - 1] || age > s.attention.count) continue;
    const float* past = s.past.data() + static_cast<std::size_t>((s.next - age + max_age_) %
                                                                 max_age_) * n;
    const float* hint = hint_rows + static_cast<std::size_t>(age - 1) * F * hint_channels_;
    scale_.forward(hint, F, film_scale);
    shift_.forward(hint, F, aligned);
    for (int i = 0; i < n; ++i) aligned[i] += past[i] * film_scale[i];
    attention_.rewrite(s.attention, aligned, age);
  }
  // This frame, its hint still to come: the FiLM biases alone.
  const float* scale_bias = scale_.bias();
  const float* shift_bias = shift_.bias();
  for (int f = 0; f < F; ++f)
    for (int c = 0; c < dim_; ++c)
      aligned[f * dim_ + c] = z[f * dim_ + c] * scale_bias[c] + shift_bias[c];
  std::memcpy(s.past.data() + static_cast<std::size_t>(s.next) * n, z, sizeof(float) * n);
  s.next = (s.next + 1) % max_age_;
  clock.lap("merge: FiLM", index);
  attention_.step(s.attention, z, aligned, s.update.data(), &clock, index, /*merge=*/true,
                  age_bias_.data());
  for (int i = 0; i < n; ++i) z[i] += s.update[i];
}

// ---- Model -----------------------------------------------------------------

Model::Model(const EngineConfig& cfg, const TensorMap& tensors) : cfg_((check_config(cfg), cfg)) {
  const BufferTally tally;
  const bool boosted = cfg.role == Role::kBoosted;
  const Weights root(tensors);
  const Weights net = boosted ? root / "small" : root;
  encoder_ = CausalConv3x3(net / "encoder", 2 * cfg.channels, cfg.dim, false);
  encoder_norm_ = ChannelNorm(net / "encoder_norm", cfg.dim);
  for (int b = 0; b < cfg.blocks; ++b)
    blocks_.emplace_back(net / "blocks" / std::to_string(b), cfg);
  if (boosted)
    for (int b = 0; b + 1 < cfg.blocks; ++b) {
      const Weights w = root / "merges" / std::to_string(b);
      if (cfg.max_age)
        age_merges_.emplace_back(w, cfg);
      else
        merges_.emplace_back(w, cfg);
    }
  decoder_ = CausalConv3x3(net / "decoder", cfg.dim, cfg.spec_channels(), true);
  if (makes_hints())
    hint_generator_ = CausalConv3x3(root / "hint_generator", cfg.spec_channels(),
                                    cfg.hint_channels, false);
  weight_bytes_ = tally.bytes();
}

// ---- Engine ----------------------------------------------------------------

Engine::Engine(const EngineConfig& cfg, const TensorMap& tensors)
    : Engine(std::make_shared<const Model>(cfg, tensors)) {}

Engine::Engine(std::shared_ptr<const Model> model) : model_(std::move(model)) {
  if (!model_) throw std::invalid_argument("engine: no model");
  const BufferTally tally;
  const Model& m = *model_;
  const EngineConfig& cfg = m.config();
  analysis_ = StftBank(cfg.channels);
  synthesis_ = IstftBank(cfg.spec_channels() / 2);
  encoder_ = m.encoder_.new_state();
  for (const auto& b : m.blocks_) blocks_.push_back(b.new_state());
  for (const auto& g : m.merges_) merges_.push_back(g.new_state());
  for (const auto& g : m.age_merges_) age_merges_.push_back(g.new_state());
  arrived_.assign(std::max(cfg.max_age, 1), 0);
  decoder_ = m.decoder_.new_state();
  hint_generator_ = m.hint_generator_.new_state();
  bins_in_ = Buffer(static_cast<std::size_t>(cfg.channels) * 2 * kPadded);
  features_ = Buffer(static_cast<std::size_t>(F) * 2 * cfg.channels);
  bins_out_ = Buffer(static_cast<std::size_t>(cfg.spec_channels()) * F);
  z_ = Buffer(static_cast<std::size_t>(F) * cfg.dim);
  maps_ = Buffer(static_cast<std::size_t>(F) * cfg.spec_channels());
  hint_rows_ = Buffer(static_cast<std::size_t>(F) * std::max(cfg.hint_channels, 1) *
                     std::max(cfg.max_age, 1));
  hint_made_ = Buffer(static_cast<std::size_t>(F) * std::max(cfg.hint_channels, 1));
  state_bytes_ = tally.bytes();
}

void Engine::reset() {
  analysis_.reset();
  synthesis_.reset();
  encoder_.reset();
  for (auto& b : blocks_) b.reset();
  for (auto& m : merges_) m.reset();
  for (auto& m : age_merges_) m.reset();
  decoder_.reset();
  hint_generator_.reset();
}

bool Engine::process(const float* input, const float* hint, float* output, float* hint_out) {
  const std::size_t hint_n = static_cast<std::size_t>(config().hint_channels) * F;
  std::fill(arrived_.begin(), arrived_.end(), 0);
  return checked_step(input, hint, output, hint_out, hint == nullptr || all_finite(hint, hint_n));
}

bool Engine::process(const float* input, const HintArrival* hints, int count, float* output) {
  const EngineConfig& cfg = config();
  const int hc = cfg.hint_channels;
  const std::size_t hint_n = static_cast<std::size_t>(hc) * F;
  std::fill(arrived_.begin(), arrived_.end(), 0);
  bool hints_ok = true;
  for (int i = 0; i < count; ++i) {
    const int age = hints[i].age;
    if (age < 1 || age > cfg.max_age || hints[i].hint == nullptr) continue;
    hints_ok = hints_ok && all_finite(hints[i].hint, hint_n);
    float* rows = hint_rows_.data() + static_cast<std::size_t>(age - 1) * hint_n;
    for (int c = 0; c < hc; ++c)
      for (int f = 0; f < F; ++f) rows[f * hc + c] = hints[i].hint[c * F + f];
    arrived_[age - 1] = 1;
  }
  return checked_step(input, nullptr, output, nullptr, hints_ok);
}

bool Engine::checked_step(const float* input, const float* hint, float* output, float* hint_out,
                          bool hints_ok) {
  const EngineConfig& cfg = config();
  const std::size_t out_n = static_cast<std::size_t>(cfg.spec_channels() / 2) * kChunk;
  const std::size_t hint_n = static_cast<std::size_t>(cfg.hint_channels) * F;
  ++stats_.chunks;
  const ScopedNoDenormals flush;
  bool ok = hints_ok && all_finite(input, static_cast<std::size_t>(cfg.channels) * kChunk);
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
  const Model& m = *model_;
  const EngineConfig& cfg = m.config();
  const int m_count = cfg.channels, s_count = cfg.sources, hc = cfg.hint_channels;
  StageClock clock(stage_times_);
  // STFT -> features [bin x (re, im per mic)].
  analysis_.process(input, bins_in_.data());
  for (int mic = 0; mic < m_count; ++mic) {
    const float* re = bins_in_.data() + mic * 2 * kPadded;
    const float* im = re + kPadded;
    for (int f = 0; f < F; ++f) {
      features_[f * 2 * m_count + 2 * mic] = re[f];
      features_[f * 2 * m_count + 2 * mic + 1] = im[f];
    }
  }
  clock.lap("STFT");
  m.encoder_.step(encoder_, features_.data(), z_.data());
  m.encoder_norm_.forward(z_.data(), z_.data(), F);
  clock.lap("encoder");

  if (!m.merges_.empty()) {  // an any-delay model's were laid out by process()
    // Hints arrive as [C_h x bins]; a missing one is zeros, as in training.
    if (hint) {
      for (int c = 0; c < hc; ++c)
        for (int f = 0; f < F; ++f) hint_rows_[f * hc + c] = hint[c * F + f];
    } else {
      hint_rows_.zero();
    }
  }
  for (std::size_t b = 0; b < m.blocks_.size(); ++b) {
    m.blocks_[b].step(blocks_[b], z_.data(), clock, static_cast<int>(b));
    if (b < m.merges_.size())
      m.merges_[b].step(merges_[b], z_.data(), hint_rows_.data(), clock, static_cast<int>(b));
    if (b < m.age_merges_.size())
      m.age_merges_[b].step(age_merges_[b], z_.data(), hint_rows_.data(),
                            arrived_.data(), clock,
                            static_cast<int>(b));
  }

  m.decoder_.step(decoder_, z_.data(), maps_.data());
  clock.lap("decoder");
  const int sc = cfg.spec_channels();
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
    m.hint_generator_.step(hint_generator_, maps_.data(), hint_made_.data());
    if (hint_out)
      for (int c = 0; c < hc; ++c)
        for (int f = 0; f < F; ++f) hint_out[c * F + f] = hint_made_[f * hc + c];
    clock.lap("hint generator");
  }
}

}  // namespace kb
