// Short-time Fourier transform of the signal path: Hamming window of 192
// samples, hop 128, 97 bins. A direct DFT against precomputed tables: at this
// size (97 x 192 per frame) it is cheap, exact to float rounding and has no
// data-dependent branches.
#pragma once

#include <array>
#include <vector>

#include "signal_path.h"

namespace kb {

// Periodic Hamming window, the same as torch.hamming_window(192).
std::array<float, kWindow> hamming_window();

// One 192-sample frame -> 97 complex bins. Stateless.
class StftAnalyzer {
 public:
  StftAnalyzer();
  // frame: kWindow samples; re, im: kBins values each.
  void analyze(const float* frame, float* re, float* im) const;

 private:
  std::vector<float> cos_;  // [kBins][kWindow], window folded in
  std::vector<float> sin_;  // [kBins][kWindow], window and sign folded in
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
  std::vector<float> cos_;  // [kWindow][kBins], window, 1/N and bin weight folded in
  std::vector<float> sin_;
  std::array<float, kChunk> inv_envelope_{};
  std::array<float, kLookahead> tail_{};
  std::array<float, kWindow> frame_{};
};

}  // namespace kb
