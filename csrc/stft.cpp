#include "stft.h"

#include "kernels.h"

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

StftAnalyzer::StftAnalyzer() : table_(kWindow * 2 * kPadded, 0.f), bins_(2 * kPadded) {
  const auto w = hamming_window();
  for (int n = 0; n < kWindow; ++n) {
    for (int f = 0; f < kBins; ++f) {
      const long k = static_cast<long>(f) * n;
      table_[n * 2 * kPadded + f] = static_cast<float>(w[n] * cos_step(k));
      table_[n * 2 * kPadded + kPadded + f] = static_cast<float>(-w[n] * sin_step(k));
    }
  }
}

void StftAnalyzer::analyze(const float* frame, float* re, float* im) const {
  kernels().gemm(frame, 1, kWindow, table_.data(), 2 * kPadded, nullptr, bins_.data(), false);
  std::memcpy(re, bins_.data(), sizeof(float) * kBins);
  std::memcpy(im, bins_.data() + kPadded, sizeof(float) * kBins);
}

void StftStream::reset() { window_.fill(0.f); }

void StftStream::process(const float* chunk, float* re, float* im) {
  std::memmove(window_.data(), window_.data() + kChunk, kLookahead * sizeof(float));
  std::memcpy(window_.data() + kLookahead, chunk, kChunk * sizeof(float));
  analyzer_.analyze(window_.data(), re, im);
}

IstftStream::IstftStream() : table_(2 * kBins * kWindow) {
  const auto w = hamming_window();
  for (int f = 0; f < kBins; ++f) {
    // One-sided inverse real DFT: DC and Nyquist count once, the rest twice;
    // the imaginary parts of DC and Nyquist drop out (sin = 0 there).
    const double weight = (f == 0 || f == kBins - 1) ? 1.0 : 2.0;
    for (int n = 0; n < kWindow; ++n) {
      const long k = static_cast<long>(f) * n;
      table_[f * kWindow + n] = static_cast<float>(w[n] * weight * cos_step(k) / kWindow);
      table_[(kBins + f) * kWindow + n] =
          static_cast<float>(-w[n] * weight * sin_step(k) / kWindow);
    }
  }
  for (int i = 0; i < kChunk; ++i) {
    double env = static_cast<double>(w[i]) * w[i];
    if (i < kLookahead) env += static_cast<double>(w[i + kChunk]) * w[i + kChunk];
    inv_envelope_[i] = static_cast<float>(1.0 / env);
  }
  reset();
}

void IstftStream::reset() { tail_.fill(0.f); }

void IstftStream::process(const float* re, const float* im, float* out) {
  std::memcpy(bins_.data(), re, sizeof(float) * kBins);
  std::memcpy(bins_.data() + kBins, im, sizeof(float) * kBins);
  kernels().gemm(bins_.data(), 1, 2 * kBins, table_.data(), kWindow, nullptr, frame_.data(),
                 false);
  for (int i = 0; i < kChunk; ++i) {
    const float overlap = i < kLookahead ? tail_[i] : 0.f;
    out[i] = (frame_[i] + overlap) * inv_envelope_[i];
  }
  std::memcpy(tail_.data(), frame_.data() + kChunk, kLookahead * sizeof(float));
}

}  // namespace kb
