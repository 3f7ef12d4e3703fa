// One small class per layer of the streaming step. Construction packs the
// weights (PyTorch layouts in) into the layout the hot path wants and sizes
// every buffer; step() and reset() never allocate.
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
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], Free> data_;
  std::size_t size_ = 0;
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
  CausalConv3x3() = default;
  CausalConv3x3(const Weights& w, int c_in, int c_out, bool transposed);
  void step(const float* x, float* y);  // x [kBins x c_in], y [kBins x c_out]
  void reset();

 private:
  int c_in_ = 0, c_out_ = 0;
  Buffer weight_;   // [(3 frames x 3 bins x c_in) x c_out]
  Buffer bias_;
  Buffer history_;  // frames t-2, t-1: [2 x kBins x c_in]
  Buffer columns_;  // [kBins x 9 c_in]
};

// Bidirectional LSTM across the bins of one frame; no state across frames.
class FreqBiLstm {
 public:
  FreqBiLstm() = default;
  FreqBiLstm(const Weights& w, int dim, int hidden);
  void forward(const float* x, float* y);  // x [kBins x dim] -> y [kBins x 2 hidden]

 private:
  int dim_ = 0, hidden_ = 0;
  Linear input_;             // dim -> 8 hidden: forward gates | reverse gates
  Buffer recurrent_[2];      // W_hh^T per direction: [hidden x 4 hidden]
  Buffer gates_;             // [kBins x 8 hidden]
  Buffer step_gates_;         // scratch of the recurrence
};

// LSTM across time, one (h, c) per bin, all bins at once.
class TimeLstm {
 public:
  TimeLstm() = default;
  TimeLstm(const Weights& w, int dim, int hidden);
  void step(const float* x, float* y);  // x [kBins x dim] -> y [kBins x hidden] (= h)
  void reset();

 private:
  int hidden_ = 0;
  Linear input_;
  Buffer recurrent_;  // [hidden x 4 hidden]
  Buffer gates_, h_, c_;
};

// 1x1 map to heads x per_head channels, PReLU per head, LayerNorm over
// (per_head x bins) per head. Output [kBins x heads*per_head].
class HeadProjection {
 public:
  HeadProjection() = default;
  HeadProjection(const Weights& w, int in, int heads, int per_head);
  void forward(const float* x, float* y) const;

 private:
  int heads_ = 0, per_head_ = 0;
  Linear map_;
  Buffer gamma_, beta_;  // [kBins x heads*per_head]
  Buffer slope_;         // PReLU slope of each column's head: [heads*per_head]
  mutable Buffer scratch_;  // per-column statistics
};

// Causal local multi-head attention over frames, with a ring buffer of the
// last `frames` keys and values. Self-attention when q_in == kv_in.
class FrameAttention {
 public:
  FrameAttention() = default;
  FrameAttention(const Weights& w, int dim, int heads, int e, int frames);
  // update [kBins x dim] = attention of q_in's frame over kv_in's last frames.
  // `clock` (if given) times its projections, scores and weighted sum.
  // Its laps are named after `what` ("attention" or "merge").
  void step(const float* q_in, const float* kv_in, float* update, StageClock* clock = nullptr,
            int index = -1, bool merge = false);
  void reset();

 private:
  int dim_ = 0, heads_ = 0, e_ = 0, frames_ = 0;
  int count_ = 0, next_ = 0;  // valid frames in the ring, slot to write next
  float scale_ = 0.f;
  HeadProjection query_, key_, value_, out_;
  Buffer q_;        // [heads x kBins*e]
  Buffer keys_;     // ring: [frames x heads x kBins*e]
  Buffer values_;   // ring: [frames x kBins x dim]
  Buffer scores_;   // [frames x heads]
  Buffer partial_;  // [heads*e]
  Buffer head_max_, head_sum_;  // [heads]
  Buffer column_weight_;  // [dim]
  Buffer mixed_;    // [kBins x max(dim, heads*e)]: projections, then the weighted sum
};

}  // namespace kb
