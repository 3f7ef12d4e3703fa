// The streaming engine: one 8 ms step of the small, boosted or large model.
// A Model is built once from a config and named tensors (PyTorch layouts and
// names, as in a model folder); an Engine is one stream of it. process() and
// reset() never allocate, lock or throw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "layers.h"
#include "stage_clock.h"
#include "stft.h"

namespace kb {

enum class Role { kSmall = 0, kLarge = 1, kBoosted = 2 };

struct EngineConfig {
  Role role = Role::kSmall;
  int channels = 2, sources = 2;    // M, S
  int dim = 16, hidden = 16, blocks = 3;
  int attention_heads = 0, attention_e = 6, attention_frames = 50;  // large model
  // Boosted: hints in, merges after the first blocks-1 blocks.
  // Large: hint_channels > 0 adds the hint generator (hints out).
  int hint_channels = 0;
  int delay = 0;
  int merge_heads = 4, merge_e = 3, merge_frames = 50;
  int max_age = 0;  // boosted: 0 a fixed-delay model; N an any-delay one (hint ages 1..N)

  int spec_channels() const { return 2 * sources * channels; }
};

// The integer fields of EngineConfig, for code that fills it field by field
// from another description (the Python dict, the C ABI's kb_config).
#define KB_ENGINE_CONFIG_INT_FIELDS(X)                                                    \
  X(channels) X(sources) X(dim) X(hidden) X(blocks) X(attention_heads) X(attention_e)   \
  X(attention_frames) X(hint_channels) X(delay) X(merge_heads) X(merge_e) X(merge_frames) \
  X(max_age)

class GridBlock {
 public:
  struct State {
    FreqBiLstm::State intra_lstm;
    TimeLstm::State inter_lstm;
    FrameAttention::State attention;  // empty without attention
    Buffer normed, lstm_out, update;
    void reset();
  };
  GridBlock(const Weights& w, const EngineConfig& cfg);
  State new_state() const;
  void step(State& s, float* z, StageClock& clock, int index) const;  // z [kBins x dim] in place

 private:
  int dim_, hidden_;
  ChannelNorm intra_norm_, inter_norm_;
  FreqBiLstm intra_lstm_;
  Linear intra_proj_, inter_proj_;
  TimeLstm inter_lstm_;
  bool has_attention_;
  FrameAttention attention_;
};

// FiLM of the delayed hint onto the block's own output of frame t-d, then
// cross-attention from the current features onto those aligned frames.
class Merge {
 public:
  struct State {
    int next = 0;
    Buffer past;  // ring of the last `delay` frames of z: [delay x kBins x dim]
    Buffer film_scale, aligned, update;
    FrameAttention::State attention;
    void reset();
  };
  Merge(const Weights& w, const EngineConfig& cfg);
  State new_state() const;
  // z [kBins x dim] in place; hint [kBins x C_h]
  void step(State& s, float* z, const float* hint, StageClock& clock, int index) const;

 private:
  int dim_, delay_;
  Linear scale_, shift_;
  FrameAttention attention_;
};

// The any-delay merge (the reference's AgeMerge): every frame of the block's
// output is a key/value frame at its own position, FiLM'd by the FiLM biases
// alone until that frame's hint arrives and by the hint from then on; a
// learned bias per head and lag tells the queries each frame's age.
class AgeMerge {
 public:
  struct State {
    int next = 0;
    Buffer past;  // ring of the last max_age frames of z: [max_age x kBins x dim]
    Buffer film_scale, aligned, update;
    FrameAttention::State attention;
    void reset();
  };
  AgeMerge(const Weights& w, const EngineConfig& cfg);
  State new_state() const;
  // z [kBins x dim] in place; hint_rows [max_age x kBins x C_h]: the hint of
  // age a at (a-1), used where arrived[a-1].
  void step(State& s, float* z, const float* hint_rows, const uint8_t* arrived, StageClock& clock,
            int index) const;

 private:
  int dim_, hint_channels_, max_age_;
  Linear scale_, shift_;
  FrameAttention attention_;
  Buffer age_bias_;  // [heads x frames]
};

// A hint that arrived for an any-delay model: made from the chunk `age`
// chunks before this one.
struct HintArrival {
  const float* hint;  // [hint_channels x 97]
  int age;
};

struct EngineStats {
  uint64_t chunks = 0;
  uint64_t nonfinite_resets = 0;  // chunks with NaN/Inf in input, hint or output
};

// A model's packed weights: built once, then read-only, so any number of
// streams (Engines) on any threads share one (whisper.cpp's model / state
// split). Holds no state of any stream.
class Model {
 public:
  Model(const EngineConfig& cfg, const TensorMap& tensors);
  const EngineConfig& config() const { return cfg_; }
  bool makes_hints() const { return cfg_.role == Role::kLarge && cfg_.hint_channels > 0; }
  std::size_t weight_bytes() const { return weight_bytes_; }

 private:
  friend class Engine;
  EngineConfig cfg_;
  CausalConv3x3 encoder_;
  ChannelNorm encoder_norm_;
  std::vector<GridBlock> blocks_;
  std::vector<Merge> merges_;
  std::vector<AgeMerge> age_merges_;
  CausalConv3x3 decoder_;
  CausalConv3x3 hint_generator_;
  std::size_t weight_bytes_ = 0;
};

// One stream of a model: everything a stream carries from chunk to chunk
// (STFT overlap, convolution history, LSTM states, attention rings) and its
// scratch, sized once.
class Engine {
 public:
  explicit Engine(std::shared_ptr<const Model> model);
  Engine(const EngineConfig& cfg, const TensorMap& tensors);  // with a model of its own

  // input [channels x 128], planar; hint [hint_channels x 97] or null (boosted);
  // output [sources x channels x 128]; hint_out [hint_channels x 97] or null
  // (large with hint generator). Returns false when it met NaN/Inf: the
  // output is silence, the state was reset and the event counted.
  bool process(const float* input, const float* hint, float* output, float* hint_out);
  // Any-delay boosted models: the `count` hints that arrived at this chunk.
  // Ages outside 1..max_age are ignored; of two of one age the later counts.
  bool process(const float* input, const HintArrival* hints, int count, float* output);
  bool any_delay() const { return config().max_age > 0; }
  void reset();

  const EngineConfig& config() const { return model_->config(); }
  const std::shared_ptr<const Model>& model() const { return model_; }
  std::size_t state_bytes() const { return state_bytes_; }  // this stream's own
  // Time each stage of every step into `times` (null: stop). Not thread-safe
  // with process().
  void set_stage_times(StageTimes* times) { stage_times_ = times; }
  const EngineStats& stats() const { return stats_; }
  bool makes_hints() const { return model_->makes_hints(); }

 private:
  bool checked_step(const float* input, const float* hint, float* output, float* hint_out,
                    bool hints_ok);
  void step(const float* input, const float* hint, float* output, float* hint_out);

  std::shared_ptr<const Model> model_;
  EngineStats stats_;
  StageTimes* stage_times_ = nullptr;
  std::size_t state_bytes_ = 0;
  StftBank analysis_;
  IstftBank synthesis_;
  CausalConv3x3::State encoder_, decoder_, hint_generator_;
  std::vector<GridBlock::State> blocks_;
  std::vector<Merge::State> merges_;
  std::vector<AgeMerge::State> age_merges_;
  std::vector<uint8_t> arrived_;  // any-delay: per age, a hint arrived this chunk
  Buffer bins_in_, features_, z_, maps_, bins_out_, hint_rows_, hint_made_;
};

}  // namespace kb
