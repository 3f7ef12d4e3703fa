// One small class per layer of the streaming step. Construction packs the
// weights (PyTorch layouts in) into the layout the hot path wants; a layer is
// then read-only, so one set of weights serves many streams on many threads.
// What a stream carries from step to step (and its scratch) is the layer's
// State, made by new_state(); step() and reset() never allocate.
//
// A frame of features is row-major [kBins x channels]: one row per frequency
// bin, so per-bin maps over all 97 bins are single matrix products.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels.h"
#include "signal_path.h"
#include "stage_clock.h"

namespace kb {

// A float array, 64-byte aligned, sized once.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n);
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  float& operator[](std::size_t i) { return data_[i]; }
  float operator[](std::size_t i) const { return data_[i]; }
  void zero();

 private:
  friend class BufferTally;
  static thread_local std::size_t allocated_;  // bytes made on this thread, ever
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], Free> data_;
  std::size_t size_ = 0;
};

// The bytes of the Buffers made on this thread while it lives: how big a
// model's weights and a stream's state are.
class BufferTally {
 public:
  BufferTally() : start_(Buffer::allocated_) {}
  std::size_t bytes() const { return Buffer::allocated_ - start_; }

 private:
  std::size_t start_;
};

struct TensorRef {
  const float* data;
  std::vector<int64_t> shape;
};
using TensorMap = std::unordered_map<std::string, TensorRef>;

// Looks weights up by name under a prefix and checks their shapes.
class Weights {
 public:
  Weights(const TensorMap& tensors, std::string prefix = "")
      : tensors_(&tensors), prefix_(std::move(prefix)) {}
  Weights operator/(const std::string& child) const { return {*tensors_, prefix_ + child + "."}; }
  const float* get(const std::string& name, const std::vector<int64_t>& shape) const;
  bool has(const std::string& name) const { return tensors_->count(prefix_ + name) != 0; }

 private:
  const TensorMap* tensors_;
  std::string prefix_;
};

// y[rows x out] (+)= x[rows x in] . W^T + b
class Linear {
 public:
  Linear() = default;
  Linear(const Weights& w, int in, int out);
  Linear(const float* weight /*[out x in]*/, const float* bias /*[out]*/, int in, int out);
  void forward(const float* x, int rows, float* y, bool accumulate = false) const;
  int in() const { return in_; }
  int out() const { return out_; }
  const float* weight_t() const { return wt_.data(); }  // [in x out]
  const float* bias() const { return bias_.data(); }

 private:
  int in_ = 0, out_ = 0;
  Buffer wt_;  // [in x out]
  Buffer bias_;
};

// LayerNorm over the channels of each row.
class ChannelNorm {
 public:
  ChannelNorm() = default;
  ChannelNorm(const Weights& w, int dim);
  void forward(const float* x, float* y, int rows) const;

 private:
  int dim_ = 0;
  Buffer gamma_, beta_;
};

// 3x3 convolution over (time, frequency), causal in time with two frames of
// history, frequency padded by one. `transposed`: the weight is in
// ConvTranspose2d layout and the layer is the causal transposed convolution.
class CausalConv3x3 {
 public:
  struct State {
    Buffer history;  // frames t-2, t-1: [2 x kBins x c_in]
    Buffer columns;  // [kBins x 9 c_in]
    void reset() { history.zero(); }
  };
  CausalConv3x3() = default;
  CausalConv3x3(const Weights& w, int c_in, int c_out, bool transposed);
  State new_state() const;
  void step(State& s, const float* x, float* y) const;  // x [kBins x c_in], y [kBins x c_out]

 private:
  int c_in_ = 0, c_out_ = 0;
  Buffer weight_;   // [(3 frames x 3 bins x c_in) x c_out]
  Buffer bias_;
};

// Bidirectional LSTM across the bins of one frame; no state across frames.
class FreqBiLstm {
 public:
  struct State {  // scratch only
    Buffer gates;       // [kBins x 8 hidden]
    Buffer step_gates;  // of the recurrence
  };
  FreqBiLstm() = default;
  FreqBiLstm(const Weights& w, int dim, int hidden);
  State new_state() const;
  void forward(State& s, const float* x, float* y) const;  // [kBins x dim] -> [kBins x 2 hidden]

 private:
  int dim_ = 0, hidden_ = 0;
  Linear input_;             // dim -> 8 hidden: forward gates | reverse gates
  Buffer recurrent_[2];      // W_hh^T per direction: [hidden x 4 hidden]
};

// LSTM across time, one (h, c) per bin, all bins at once.
class TimeLstm {
 public:
  struct State {
    Buffer gates, h, c;  // [kBins x 4 hidden], [kBins x hidden] twice
    void reset() {
      h.zero();
      c.zero();
    }
  };
  TimeLstm() = default;
  TimeLstm(const Weights& w, int dim, int hidden);
  State new_state() const;
  void step(State& s, const float* x, float* y) const;  // [kBins x dim] -> [kBins x hidden] (= h)

 private:
  int hidden_ = 0;
  Linear input_;
  Buffer recurrent_;  // [hidden x 4 hidden]
};

// 1x1 map to heads x per_head channels, PReLU per head, LayerNorm over
// (per_head x bins) per head. Output [kBins x heads*per_head].
class HeadProjection {
 public:
  HeadProjection() = default;
  HeadProjection(const Weights& w, int in, int heads, int per_head);
  // scratch: 2 * width() floats (per-column statistics)
  void forward(const float* x, float* y, float* scratch) const;
  int width() const { return heads_ * per_head_; }

 private:
  int heads_ = 0, per_head_ = 0;
  Linear map_;
  Buffer gamma_, beta_;  // [kBins x heads*per_head]
  Buffer slope_;         // PReLU slope of each column's head: [heads*per_head]
};

// Causal local multi-head attention over frames, with a ring buffer of the
// last `frames` keys and values. Self-attention when q_in == kv_in.
class FrameAttention {
 public:
  struct State {
    int count = 0, next = 0;  // valid frames in the rings, slot to write next
    Buffer keys;              // ring: [frames x heads x kBins*e]
    Buffer values;            // ring: [frames x kBins x dim]
    Buffer q;                 // [heads x kBins*e]
    Buffer scores;            // [frames x heads]
    Buffer head_max, head_sum;  // [heads]
    Buffer column_weight;     // [frames x dim]
    Buffer mixed;  // [kBins x max(dim, heads*e)]: projections, then the weighted sum
    Buffer norm_scratch;      // the projections' statistics
    void reset() { count = next = 0; }
  };
  FrameAttention() = default;
  FrameAttention(const Weights& w, int dim, int heads, int e, int frames);
  State new_state() const;
  // update [kBins x dim] = attention of q_in's frame over kv_in's last frames.
  // `clock` (if given) times its projections, scores and weighted sum, in
  // laps named "merge: ..." if `merge`, else "attention: ...". `lag_bias`
  // (if given) [heads x frames] is added to each scaled score by its key
  // frame's lag (0: this frame).
  void step(State& s, const float* q_in, const float* kv_in, float* update,
            StageClock* clock = nullptr, int index = -1, bool merge = false,
            const float* lag_bias = nullptr) const;
  // Replace the key and value of the frame `lag` frames before the next one
  // step() adds (1 <= lag <= the frames held, lag < frames) by kv_in's.
  void rewrite(State& s, const float* kv_in, int lag) const;
  int frames() const { return frames_; }

 private:
  int dim_ = 0, heads_ = 0, e_ = 0, frames_ = 0;
  float scale_ = 0.f;
  HeadProjection query_, key_, value_, out_;
  void project_kv(State& s, const float* kv_in, int slot) const;
};

}  // namespace kb
