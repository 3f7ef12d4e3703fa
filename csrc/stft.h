// Short-time Fourier transform of the signal path: Hamming window of 192
// samples, hop 128, 97 bins. A direct DFT as one matrix product against a
// precomputed table: at this size (97 x 192 per frame) it is cheap, exact to
// float rounding and runs on the same vectorised kernel as the model.
#pragma once

#include <array>
#include <vector>

#include "signal_path.h"

namespace kb {

constexpr int kPadded = 104;  // kBins rounded up to a multiple of 8

// Periodic Hamming window, the same as torch.hamming_window(192).
std::array<float, kWindow> hamming_window();

// One 192-sample frame -> 97 complex bins. Stateless.
class StftAnalyzer {
 public:
  StftAnalyzer();
  // frame: kWindow samples; re, im: kBins values each.
  void analyze(const float* frame, float* re, float* im) const;

 private:
  const std::vector<float>* table_;
  mutable std::vector<float> bins_;  // [2 * kPadded]
};

// Streaming analysis of `channels` channels in one matrix product: keeps the
// last kLookahead samples of each so that each 128-sample chunk completes a
// 192-sample window.
class StftBank {
 public:
  explicit StftBank(int channels = 1);
  void reset();
  // chunks: [channels x kChunk]; bins: [channels x 2 kPadded], re at 0, im at kPadded.
  void process(const float* chunks, float* bins);

 private:
  int channels_;
  const std::vector<float>* table_;  // shared [kWindow x 2 kPadded]
  std::vector<float> windows_;       // [channels x kWindow]: history | new chunk
};

// Streaming synthesis of `channels` channels in one matrix product: inverse
// DFT, synthesis window and overlap-add, carrying each 64-sample tail. The
// normalisation is the steady-state window envelope, so every chunk (the
// first one too) is treated alike and streaming equals offline exactly.
class IstftBank {
 public:
  explicit IstftBank(int channels = 1);
  void reset();
  // bins: [channels x 2 kBins], re at 0, im at kBins; out: [channels x kChunk].
  void process(const float* bins, float* out);

 private:
  int channels_;
  const std::vector<float>* table_;  // shared [2 kBins x kWindow]
  std::array<float, kChunk> inv_envelope_{};
  std::vector<float> frames_;  // [channels x kWindow]
  std::vector<float> tails_;   // [channels x kLookahead]
};

}  // namespace kb
