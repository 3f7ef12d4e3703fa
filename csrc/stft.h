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
  // [kWindow x 2*kPadded]: columns 0..96 give re, kPadded.. give im; window folded in.
  std::vector<float> table_;
  mutable std::vector<float> bins_;  // [2 * kPadded]
};

// Streaming analysis of one channel: keeps the last kLookahead samples so
// that each 128-sample chunk completes one 192-sample window.
class StftStream {
 public:
  StftStream() { reset(); }
  void reset();
  // chunk: kChunk samples; re, im: kBins values each.
  void process(const float* chunk, float* re, float* im);

 private:
  StftAnalyzer analyzer_;
  std::array<float, kWindow> window_{};  // [history | new chunk]
};

// Streaming synthesis of one channel: inverse DFT, synthesis window and
// overlap-add. The 64-sample overlap tail is carried to the next chunk. The
// normalisation is the steady-state window envelope, so every chunk (the
// first one too) is treated alike and streaming equals offline exactly.
class IstftStream {
 public:
  IstftStream();
  void reset();
  // re, im: kBins values each; out: kChunk samples.
  void process(const float* re, const float* im, float* out);

 private:
  // [2*kBins x kWindow]: rows are re bins then im bins; window, 1/N and the
  // one-sided bin weight folded in.
  std::vector<float> table_;
  std::array<float, 2 * kBins> bins_{};
  std::array<float, kChunk> inv_envelope_{};
  std::array<float, kLookahead> tail_{};
  std::array<float, kWindow> frame_{};
};

}  // namespace kb
