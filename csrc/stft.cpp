#include "stft.h"

#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace kb {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// cos/sin of 2*pi*k/kWindow, with k reduced first so large products stay exact.
double cos_step(long k) { return std::cos(kTwoPi * static_cast<double>(k % kWindow) / kWindow); }
double sin_step(long k) { return std::sin(kTwoPi * static_cast<double>(k % kWindow) / kWindow); }

}  // namespace

std::array<float, kWindow> hamming_window() {
  std::array<float, kWindow> w{};
  for (int n = 0; n < kWindow; ++n) w[n] = static_cast<float>(0.54 - 0.46 * cos_step(n));
  return w;
}

// [kWindow x 2 kPadded]: column f < 97 gives re of bin f, kPadded + f its im.
const std::vector<float>& analysis_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(kWindow * 2 * kPadded, 0.f);
    const auto w = hamming_window();
    for (int n = 0; n < kWindow; ++n)
      for (int f = 0; f < kBins; ++f) {
        const long k = static_cast<long>(f) * n;
        t[n * 2 * kPadded + f] = static_cast<float>(w[n] * cos_step(k));
        t[n * 2 * kPadded + kPadded + f] = static_cast<float>(-w[n] * sin_step(k));
      }
    return t;
  }();
  return table;
}

// [2 kBins x kWindow]: rows are re bins then im bins; window, 1/N and the
// one-sided bin weight folded in.
const std::vector<float>& synthesis_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(2 * kBins * kWindow);
    const auto w = hamming_window();
    for (int f = 0; f < kBins; ++f) {
      // One-sided inverse real DFT: DC and Nyquist count once, the rest twice;
      // the imaginary parts of DC and Nyquist drop out (sin = 0 there).
      const double weight = (f == 0 || f == kBins - 1) ? 1.0 : 2.0;
      for (int n = 0; n < kWindow; ++n) {
        const long k = static_cast<long>(f) * n;
        t[f * kWindow + n] = static_cast<float>(w[n] * weight * cos_step(k) / kWindow);
        t[(kBins + f) * kWindow + n] = static_cast<float>(-w[n] * weight * sin_step(k) / kWindow);
      }
    }
    return t;
  }();
  return table;
}

StftAnalyzer::StftAnalyzer() : table_(&analysis_table()), bins_(2 * kPadded) {}

void StftAnalyzer::analyze(const float* frame, float* re, float* im) const {
  kernels().gemm(frame, 1, kWindow, table_->data(), 2 * kPadded, nullptr, bins_.data(), false);
  std::memcpy(re, bins_.data(), sizeof(float) * kBins);
  std::memcpy(im, bins_.data() + kPadded, sizeof(float) * kBins);
}

StftBank::StftBank(int channels)
    : channels_(channels), table_(&analysis_table()), windows_(channels * kWindow, 0.f) {}

void StftBank::reset() { std::fill(windows_.begin(), windows_.end(), 0.f); }

void StftBank::process(const float* chunks, float* bins) {
  for (int c = 0; c < channels_; ++c) {
    float* w = windows_.data() + c * kWindow;
    std::memmove(w, w + kChunk, kLookahead * sizeof(float));
    std::memcpy(w + kLookahead, chunks + c * kChunk, kChunk * sizeof(float));
  }
  kernels().gemm(windows_.data(), channels_, kWindow, table_->data(), 2 * kPadded, nullptr, bins,
                 false);
}

IstftBank::IstftBank(int channels)
    : channels_(channels),
      table_(&synthesis_table()),
      frames_(channels * kWindow),
      tails_(channels * kLookahead, 0.f) {
  const auto w = hamming_window();
  for (int i = 0; i < kChunk; ++i) {
    double env = static_cast<double>(w[i]) * w[i];
    if (i < kLookahead) env += static_cast<double>(w[i + kChunk]) * w[i + kChunk];
    inv_envelope_[i] = static_cast<float>(1.0 / env);
  }
}

void IstftBank::reset() { std::fill(tails_.begin(), tails_.end(), 0.f); }

void IstftBank::process(const float* bins, float* out) {
  kernels().gemm(bins, channels_, 2 * kBins, table_->data(), kWindow, nullptr, frames_.data(),
                 false);
  for (int c = 0; c < channels_; ++c) {
    const float* frame = frames_.data() + c * kWindow;
    float* tail = tails_.data() + c * kLookahead;
    float* o = out + c * kChunk;
    for (int i = 0; i < kChunk; ++i) {
      const float overlap = i < kLookahead ? tail[i] : 0.f;
      o[i] = (frame[i] + overlap) * inv_envelope_[i];
    }
    std::memcpy(tail, frame + kChunk, kLookahead * sizeof(float));
  }
}

}  // namespace kb
