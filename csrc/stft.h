// Short-time Fourier transform of the signal path: Hamming window of 192
// samples, hop 128, 97 bins. A direct DFT as matrix products against
// precomputed tables, halved by the window's symmetry: at this size it is
// cheap, exact to float rounding and runs on the same vectorised kernel as
// the model.
#pragma once

#include <array>
#include <vector>

#include "signal_path.h"

namespace kb {

constexpr int kPadded = 104;  // kBins rounded up to a multiple of 8

// Periodic Hamming window, the same as torch.hamming_window(192).
std::array<float, kWindow> hamming_window();

constexpr int kHalf = kWindow / 2 + 1;   // 97 folded samples: n = 0 .. 96
constexpr int kSines = kWindow / 2 - 1;  // 95 samples with a nonzero sine: n = 1 .. 95
constexpr int kColumns = 112;            // kBins rounded up to whole 16-float vectors

// Half-size DFT tables (stft.cpp says how the transforms fold), shared by every
// analyzer and synthesizer; rows are kColumns wide, the padding zero.
struct FoldedTables {
  std::vector<float> window;         // [kWindow]
  std::vector<float> analysis_cos;   // [kHalf x kColumns]: w[n] cos, a column per bin
  std::vector<float> analysis_sin;   // [kSines x kColumns]: -w[n] sin, rows n = 1 .. 95
  std::vector<float> synthesis_cos;  // [kBins x kColumns]: weight cos / N, a column per n
  std::vector<float> synthesis_sin;  // [kBins x kColumns]: weight sin / N
};
const FoldedTables& folded_tables();

// One 192-sample frame -> 97 complex bins. Stateless.
class StftAnalyzer {
 public:
  StftAnalyzer();
  // frame: kWindow samples; re, im: kBins values each.
  void analyze(const float* frame, float* re, float* im) const;

 private:
  const FoldedTables* tables_;
  mutable std::vector<float> even_, odd_, re_, im_;  // one frame's folds and bins
};

// Streaming analysis of `channels` channels in two matrix products: keeps the
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
  const FoldedTables* tables_;
  std::vector<float> windows_;   // [channels x kWindow]: history | new chunk
  std::vector<float> even_;      // [channels x kHalf]: x[n] + x[N - n]
  std::vector<float> odd_;       // [channels x kSines]: x[n] - x[N - n]
  std::vector<float> re_, im_;   // [channels x kColumns]
};

// Streaming synthesis of `channels` channels in two matrix products: inverse
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
  const FoldedTables* tables_;
  std::vector<float> re_, im_;               // [channels x kBins]
  std::vector<float> cos_part_, sin_part_;   // [channels x kColumns]: C[n], S[n]
  std::array<float, kChunk> inv_envelope_{};
  std::vector<float> frames_;  // [channels x kWindow]
  std::vector<float> tails_;   // [channels x kLookahead]
};

}  // namespace kb
