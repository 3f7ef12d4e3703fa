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

// The periodic Hamming window is symmetric (w[N - n] = w[n]) and so are the
// DFT's cosines, while its sines are antisymmetric. So each transform folds
// the window's two halves first and multiplies by half-size tables:
//   re[f] = sum_{n=0}^{96} w[n] (x[n] + x[N-n]) cos(2 pi f n / N)
//   im[f] = -sum_{n=1}^{95} w[n] (x[n] - x[N-n]) sin(2 pi f n / N)
// (n = 0 and n = 96 are their own mirror images and count once),
// and the inverse computes C[n] and S[n] for n <= 96 only, since
// frame[n] = w[n] (C[n] - S[n]) and frame[N - n] = w[n] (C[n] + S[n]).
// Half the arithmetic and half the table bytes of a full DFT matrix.
const FoldedTables& folded_tables() {
  static const FoldedTables tables = [] {
    FoldedTables t;
    const auto w = hamming_window();
    t.window.assign(w.begin(), w.end());
    t.analysis_cos.assign(kHalf * kColumns, 0.f);
    t.analysis_sin.assign(kSines * kColumns, 0.f);
    t.synthesis_cos.assign(kBins * kColumns, 0.f);
    t.synthesis_sin.assign(kBins * kColumns, 0.f);
    for (int n = 0; n < kHalf; ++n)
      for (int f = 0; f < kBins; ++f) {
        const long k = static_cast<long>(f) * n;
        t.analysis_cos[n * kColumns + f] = static_cast<float>(w[n] * cos_step(k));
        if (n >= 1 && n <= kSines)
          t.analysis_sin[(n - 1) * kColumns + f] = static_cast<float>(-w[n] * sin_step(k));
      }
    for (int f = 0; f < kBins; ++f) {
      // One-sided inverse real DFT: DC and Nyquist count once, the rest twice;
      // the imaginary parts of DC and Nyquist drop out (sin = 0 there).
      const double weight = (f == 0 || f == kBins - 1) ? 1.0 : 2.0;
      for (int n = 0; n < kHalf; ++n) {
        const long k = static_cast<long>(f) * n;
        t.synthesis_cos[f * kColumns + n] = static_cast<float>(weight * cos_step(k) / kWindow);
        t.synthesis_sin[f * kColumns + n] = static_cast<float>(weight * sin_step(k) / kWindow);
      }
    }
    return t;
  }();
  return tables;
}

namespace {

// windows [channels x kWindow] -> re, im [channels x kColumns] (bins < 97 valid).
void analyze_windows(const FoldedTables& t, const float* windows, int channels, float* even,
                     float* odd, float* re, float* im) {
  for (int c = 0; c < channels; ++c) {
    const float* x = windows + c * kWindow;
    float* e = even + c * kHalf;
    float* o = odd + c * kSines;
    e[0] = x[0];
    e[kHalf - 1] = x[kHalf - 1];
    for (int n = 1; n <= kSines; ++n) {
      e[n] = x[n] + x[kWindow - n];
      o[n - 1] = x[n] - x[kWindow - n];
    }
  }
  kernels().gemm(even, channels, kHalf, t.analysis_cos.data(), kColumns, nullptr, re, false);
  kernels().gemm(odd, channels, kSines, t.analysis_sin.data(), kColumns, nullptr, im, false);
}

}  // namespace

StftAnalyzer::StftAnalyzer()
    : tables_(&folded_tables()),
      even_(kHalf),
      odd_(kSines),
      re_(kColumns),
      im_(kColumns) {}

void StftAnalyzer::analyze(const float* frame, float* re, float* im) const {
  analyze_windows(*tables_, frame, 1, even_.data(), odd_.data(), re_.data(), im_.data());
  std::memcpy(re, re_.data(), sizeof(float) * kBins);
  std::memcpy(im, im_.data(), sizeof(float) * kBins);
}

StftBank::StftBank(int channels)
    : channels_(channels),
      tables_(&folded_tables()),
      windows_(channels * kWindow, 0.f),
      even_(channels * kHalf),
      odd_(channels * kSines),
      re_(channels * kColumns),
      im_(channels * kColumns) {}

void StftBank::reset() { std::fill(windows_.begin(), windows_.end(), 0.f); }

void StftBank::process(const float* chunks, float* bins) {
  for (int c = 0; c < channels_; ++c) {
    float* w = windows_.data() + c * kWindow;
    std::memmove(w, w + kChunk, kLookahead * sizeof(float));
    std::memcpy(w + kLookahead, chunks + c * kChunk, kChunk * sizeof(float));
  }
  analyze_windows(*tables_, windows_.data(), channels_, even_.data(), odd_.data(), re_.data(),
                  im_.data());
  for (int c = 0; c < channels_; ++c) {
    std::memcpy(bins + c * 2 * kPadded, re_.data() + c * kColumns, sizeof(float) * kBins);
    std::memcpy(bins + c * 2 * kPadded + kPadded, im_.data() + c * kColumns,
                sizeof(float) * kBins);
  }
}

IstftBank::IstftBank(int channels)
    : channels_(channels),
      tables_(&folded_tables()),
      re_(channels * kBins),
      im_(channels * kBins),
      cos_part_(channels * kColumns),
      sin_part_(channels * kColumns),
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
  for (int c = 0; c < channels_; ++c) {
    std::memcpy(re_.data() + c * kBins, bins + c * 2 * kBins, sizeof(float) * kBins);
    std::memcpy(im_.data() + c * kBins, bins + c * 2 * kBins + kBins, sizeof(float) * kBins);
  }
  const FoldedTables& t = *tables_;
  kernels().gemm(re_.data(), channels_, kBins, t.synthesis_cos.data(), kColumns, nullptr,
                 cos_part_.data(), false);
  kernels().gemm(im_.data(), channels_, kBins, t.synthesis_sin.data(), kColumns, nullptr,
                 sin_part_.data(), false);
  for (int c = 0; c < channels_; ++c) {
    const float* cs = cos_part_.data() + c * kColumns;
    const float* sn = sin_part_.data() + c * kColumns;
    float* frame = frames_.data() + c * kWindow;
    for (int n = 0; n < kHalf; ++n) frame[n] = t.window[n] * (cs[n] - sn[n]);
    for (int n = 1; n <= kSines; ++n) frame[kWindow - n] = t.window[n] * (cs[n] + sn[n]);
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
