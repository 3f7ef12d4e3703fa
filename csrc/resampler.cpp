#include "resampler.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "signal_path.h"

namespace kb {

Resampler::Resampler(int up, int down, int channels, const float* taps, int per_phase)
    : up_(up), down_(down), channels_(channels), k_(per_phase) {
  if (up < 1 || down < 1 || channels < 1 || per_phase < 1 || !taps)
    throw std::invalid_argument("Resampler: up, down, channels and taps must be positive");
  taps_.resize(static_cast<std::size_t>(up) * per_phase);
  for (int p = 0; p < up; ++p)
    for (int m = 0; m < per_phase; ++m)
      taps_[static_cast<std::size_t>(p) * k_ + m] = taps[static_cast<std::size_t>(p) * k_ + (k_ - 1 - m)];
  history_.assign(static_cast<std::size_t>(channels) * 2 * k_, 0.f);
}

void Resampler::reset() {
  std::fill(history_.begin(), history_.end(), 0.f);
  write_ = 0;
  consumed_ = produced_ = 0;
}

int Resampler::process(const float* in, int n_in, float* out) {
  int written = 0;
  for (int i = 0; i < n_in; ++i) {
    for (int c = 0; c < channels_; ++c) {
      float* h = &history_[static_cast<std::size_t>(c) * 2 * k_];
      h[write_] = h[write_ + k_] = in[i * channels_ + c];
    }
    write_ = write_ + 1 == k_ ? 0 : write_ + 1;
    const int64_t newest = consumed_++;
    // Output j uses input floor(j * down / up) as its newest sample: emit every
    // output whose newest sample has just arrived.
    for (;;) {
      const int64_t j = produced_;
      const int64_t n = (j * down_) / up_;
      if (n != newest) break;
      const int phase = static_cast<int>((j * down_) % up_);
      const float* t = &taps_[static_cast<std::size_t>(phase) * k_];
      for (int c = 0; c < channels_; ++c) {
        const float* h = &history_[static_cast<std::size_t>(c) * 2 * k_] + write_;  // oldest first
        float acc = 0.f;
        for (int m = 0; m < k_; ++m) acc += t[m] * h[m];
        out[written * channels_ + c] = acc;
      }
      ++written;
      ++produced_;
    }
  }
  return written;
}

bool FrameFifo::push(const float* frames, int n) {
  if (size_ + n > capacity_) return false;
  for (int i = 0; i < n; ++i) {
    const int at = (start_ + size_ + i) % capacity_;
    std::memcpy(&buf_[static_cast<std::size_t>(at) * channels_], frames + i * channels_,
                sizeof(float) * channels_);
  }
  size_ += n;
  return true;
}

void FrameFifo::pop(float* frames, int n) {
  for (int i = 0; i < n; ++i) {
    const int at = (start_ + i) % capacity_;
    std::memcpy(frames + i * channels_, &buf_[static_cast<std::size_t>(at) * channels_],
                sizeof(float) * channels_);
  }
  start_ = (start_ + n) % capacity_;
  size_ -= n;
}

namespace {

int fifo_capacity(int frames, int up, int down) {
  return 8 * (frames + kChunk) * (up / down + 2);
}

}  // namespace

RateAdapter::RateAdapter(int channels, int rate, int frames, int down_l, int down_m,
                         const float* down_taps, int down_k, int up_l, int up_m,
                         const float* up_taps, int up_k)
    : channels_(channels),
      frames_(frames),
      down_(down_l, down_m, channels, down_taps, down_k),
      up_(up_l, up_m, channels, up_taps, up_k),
      in_fifo_(fifo_capacity(frames, down_l, down_m), channels),
      out_fifo_(fifo_capacity(frames, up_l, up_m), channels) {
  // The two directions must undo each other, and the model's rate (16 kHz, or
  // near it where a buffer is locked to one chunk) must be within 1 % of 16 kHz.
  const double model_rate = static_cast<double>(rate) * down_l / down_m;
  if (int64_t{down_l} * up_l != int64_t{down_m} * up_m || model_rate < 0.99 * kSampleRate ||
      model_rate > 1.01 * kSampleRate)
    throw std::invalid_argument("RateAdapter: the resamplers do not convert this rate");
  if (frames < 1) throw std::invalid_argument("RateAdapter: frames must be positive");
  const int m = channels_;
  scratch_in_.resize(static_cast<std::size_t>(down_.max_output(frames)) * m);
  scratch_out_.resize(static_cast<std::size_t>(up_.max_output(kChunk)) * m);
  chunk_i_.resize(static_cast<std::size_t>(kChunk) * m);
  chunk_.resize(chunk_i_.size());
  mix_.resize(chunk_i_.size());
  mix_i_.resize(chunk_i_.size());
  prefill_ = measure_prefill(down_l, down_m, down_taps, down_k, up_l, up_m, up_taps, up_k);
  std::vector<float> silence(static_cast<std::size_t>(prefill_) * m, 0.f);
  out_fifo_.push(silence.data(), prefill_);
}

int RateAdapter::measure_prefill(int down_l, int down_m, const float* down_taps, int down_k,
                                 int up_l, int up_m, const float* up_taps, int up_k) const {
  // Twin resamplers fed 2 s of silence the way the device will feed these:
  // the deepest the output would fall short is the silence to start with.
  Resampler down(down_l, down_m, 1, down_taps, down_k), up(up_l, up_m, 1, up_taps, up_k);
  std::vector<float> in(static_cast<std::size_t>(frames_), 0.f), chunk(kChunk, 0.f);
  std::vector<float> a(static_cast<std::size_t>(down.max_output(frames_)));
  std::vector<float> b(static_cast<std::size_t>(up.max_output(kChunk)));
  int64_t pending = 0, have = 0, deficit = 0;
  // Long enough for the device buffers, the resamplers' phases and the chunk
  // boundaries to come back into line (at 44.1 kHz with 353-frame buffers that
  // takes 1764 buffers, 14 s), after 2 s of start-up.
  const int64_t rate = int64_t{kSampleRate} * down_m / down_l;  // about the device's
  const int64_t samples_cycle = std::lcm(int64_t{down_l}, int64_t{kChunk});  // 16 kHz samples
  const int64_t frames_cycle = samples_cycle / down_l * down_m;             // device frames
  const int64_t buffers = std::min<int64_t>(std::lcm(frames_cycle, int64_t{frames_}) / frames_,
                                            1 << 20) + 2 * rate / frames_;
  for (int64_t i = 0; i < buffers; ++i) {
    pending += down.process(in.data(), frames_, a.data());
    while (pending >= kChunk) {
      pending -= kChunk;
      have += up.process(chunk.data(), kChunk, b.data());
    }
    have -= frames_;
    deficit = std::max(deficit, -have);
  }
  return static_cast<int>(deficit);
}

void RateAdapter::process(const float* in, float* out, int n, ChunkFn run, void* user) {
  const int m = channels_;
  const int got = down_.process(in, n, scratch_in_.data());
  in_fifo_.push(scratch_in_.data(), got);
  while (in_fifo_.size() >= kChunk) {
    in_fifo_.pop(chunk_i_.data(), kChunk);
    for (int i = 0; i < kChunk; ++i)
      for (int c = 0; c < m; ++c) chunk_[c * kChunk + i] = chunk_i_[i * m + c];
    run(user, chunk_.data(), mix_.data());
    for (int i = 0; i < kChunk; ++i)
      for (int c = 0; c < m; ++c) mix_i_[i * m + c] = mix_[c * kChunk + i];
    const int made = up_.process(mix_i_.data(), kChunk, scratch_out_.data());
    out_fifo_.push(scratch_out_.data(), made);
  }
  if (out_fifo_.size() >= n) {
    out_fifo_.pop(out, n);
  } else {  // only if the device changed its buffer size: play silence
    underruns_.fetch_add(1, std::memory_order_relaxed);
    std::memset(out, 0, sizeof(float) * n * m);
  }
}

}  // namespace kb
