// The real-time processor: everything one 8 ms chunk goes through on the
// audio thread, for live audio, files and plugin hosts alike.
//
// Per chunk: queue the input for the hint server, take the hint of chunk
// t - d (a fixed-delay model) or every hint of the last max_age chunks that
// arrived since the last chunk (an any-delay model), run the boosted (or
// small) engine, let the small-model fallback take over while hints stay away, and mix the sources with the input (delayed by
// the look-ahead, like the model output) under the live parameters, each
// change ramped over one chunk. Parameters and statistics are atomics, set and
// read from any thread. process() never allocates, locks or makes a system call.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine.h"
#include "hint_link.h"
#include "layers.h"
#include "signal_path.h"

namespace kb {

constexpr int kFallbackAfter = 25;  // chunks without a hint before the small model plays
constexpr int kAlignChunks = 125;   // time constant of the fallback's output alignment (1 s)

struct Params {
  double gain_db = 0.0;  // output gain, [-60, 12]
  double wet = 1.0;      // 1: model output only, 0: the delayed input only
  int source = 0;        // 0: all sources summed, 1..S: one of them
  bool bypass = false;   // the delayed input, crossfaded like wet = 0
  bool boost = true;     // use the hints; false runs the model without them
};

// Maps one model's outputs [S x M x 128] onto a reference model's: output i
// becomes gain_i x other[order_i], least squares over the recent past.
class OutputAligner {
 public:
  explicit OutputAligner(int sources, int channels, int chunks = kAlignChunks);
  void reset();
  void update(const float* reference, const float* other);
  void apply(const float* other, float* out);
  // The last fit apply() used: output i = gains[i] x other[order[i]] (the
  // identity before the first). Read it with the stream stopped, or in tests.
  void mapping(int* order, double* gains) const;
  static constexpr double kMaxGain = 4.0;  // 12 dB: the most the small model is raised
  int samples() const { return sources_ * size_; }  // floats in one [S x M x 128] output

 private:
  void fit();
  int sources_, size_;  // size_: samples per source and chunk (M x 128)
  double decay_;
  double cross_[2][2] = {};  // [i][j]: decayed sum of reference_i * other_j
  double energy_[2] = {};   // [j]: decayed sum of other_j ** 2
  bool fitted_ = false;
  int order_[2] = {0, 1};
  double gains_[2] = {1.0, 1.0};
};

// Runs the task's small model beside the boosted one on every chunk (its
// state stays warm) and crossfades to it, aligned, once `after` chunks in a
// row came without a hint; the first hint back crossfades back.
class Fallback {
 public:
  Fallback(std::unique_ptr<Engine> small, int after);
  void reset();
  void apply(const float* chunk, bool hint_arrived, float* out);  // out: boosted output, in place
  uint64_t chunks_on_small() const { return chunks_on_small_.load(std::memory_order_relaxed); }
  int after() const { return after_; }
  OutputAligner& aligner() { return aligner_; }

 private:
  std::unique_ptr<Engine> small_;
  int after_, missing_ = 0;
  float weight_ = 0.f;  // the small model's share at the end of the last chunk
  OutputAligner aligner_;
  Buffer small_out_, aligned_;
  std::atomic<uint64_t> chunks_on_small_{0};
};

struct ProcessorStats {
  uint64_t chunks = 0;
  uint64_t hints_used = 0;       // hints the engine was given
  uint64_t chunks_on_small = 0;  // chunks the fallback played
  uint64_t nonfinite_resets = 0;
  uint64_t nonfinite_inputs = 0;  // chunks whose NaN/Inf input samples were silenced
  uint64_t hints_by_age[kMaxAge + 1] = {};  // [a]: hints used a chunks after their chunk
};

class Processor {
 public:
  // engine: the model the device runs (small or boosted; large for offline
  // evaluation); link: the hint link (boosted only,
  // may be null: no hints); fallback: only beside a link (may be null).
  Processor(std::unique_ptr<Engine> engine, std::shared_ptr<HintLink> link,
            std::unique_ptr<Fallback> fallback, const Params& initial = Params{});

  // input [M x 128] -> mix [M x 128]; sources [S x M x 128] if not null
  // (the per-source output before the mix). Audio thread only.
  void process(const float* input, float* mix, float* sources = nullptr);
  // A new stream: engine, fallback, dry line, chunk count and the link. Not
  // while the audio thread runs.
  void reset();

  // Any thread; writers must not race each other (one control thread, or a lock).
  void set_params(const Params& p);
  Params params() const;

  ProcessorStats stats() const;
  int64_t chunk() const { return t_.load(std::memory_order_relaxed); }
  int channels() const { return channels_; }
  int sources() const { return sources_; }
  HintLink* link() const { return link_.get(); }
  Fallback* fallback() const { return fallback_.get(); }
  const Engine& engine() const { return *engine_; }

 private:
  struct Targets {
    double gain = 1.0, wet = 1.0;
    double weights[2] = {1.0, 1.0};
  };
  Targets targets(const Params& p) const;
  Params read_params();

  std::unique_ptr<Engine> engine_;
  std::shared_ptr<HintLink> link_;
  std::unique_ptr<Fallback> fallback_;
  int channels_, sources_;
  std::atomic<int64_t> t_{0};
  std::atomic<uint64_t> hints_used_{0};
  std::atomic<uint64_t> hints_by_age_[kMaxAge + 1] = {};
  std::vector<int> ages_;               // any-delay: the ages take_fresh returned
  std::vector<HintArrival> arrivals_;   // any-delay: what the engine is given
  Buffer out_, hint_, dry_line_, ramp_, clean_;
  std::atomic<uint64_t> nonfinite_inputs_{0};
  Targets last_;
  Params current_;  // the audio thread's copy
  // A sequence lock: odd while a writer changes the fields.
  std::atomic<uint32_t> params_seq_{0};
  std::atomic<double> gain_db_{0.0}, wet_{1.0};
  std::atomic<int> source_{0};
  std::atomic<bool> bypass_{false}, boost_{true};
};

}  // namespace kb
