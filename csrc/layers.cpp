#include "layers.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace kb {
namespace {

constexpr int F = kBins;
constexpr float kEps = 1e-5f;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace

// ---- Buffer, Weights ------------------------------------------------------

thread_local std::size_t Buffer::allocated_ = 0;

Buffer::Buffer(std::size_t n) : size_(n) {
  const std::size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes ? bytes : 64);
  if (!p) throw std::bad_alloc();
  allocated_ += bytes ? bytes : 64;
  data_.reset(static_cast<float*>(p));
  zero();
}

void Buffer::Free::operator()(float* p) const { std::free(p); }

void Buffer::zero() {
  if (size_) std::memset(data_.get(), 0, size_ * sizeof(float));
}

const float* Weights::get(const std::string& name, const std::vector<int64_t>& shape) const {
  const std::string full = prefix_ + name;
  auto it = tensors_->find(full);
  if (it == tensors_->end()) throw std::invalid_argument("missing tensor '" + full + "'");
  if (it->second.shape != shape)
    throw std::invalid_argument("tensor '" + full + "' has shape " +
                                shape_str(it->second.shape) + ", expected " + shape_str(shape));
  return it->second.data;
}

// ---- Linear, ChannelNorm ---------------------------------------------------

Linear::Linear(const float* weight, const float* bias, int in, int out)
    : in_(in), out_(out), wt_(static_cast<std::size_t>(in) * out), bias_(out) {
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) wt_[i * out + o] = weight[o * in + i];
    bias_[o] = bias[o];
  }
}

Linear::Linear(const Weights& w, int in, int out)
    : Linear(w.get("weight", {out, in}), w.get("bias", {out}), in, out) {}

void Linear::forward(const float* x, int rows, float* y, bool accumulate) const {
  kernels().gemm(x, rows, in_, wt_.data(), out_, bias_.data(), y, accumulate);
}

ChannelNorm::ChannelNorm(const Weights& w, int dim) : dim_(dim), gamma_(dim), beta_(dim) {
  std::memcpy(gamma_.data(), w.get("weight", {dim}), sizeof(float) * dim);
  std::memcpy(beta_.data(), w.get("bias", {dim}), sizeof(float) * dim);
}

void ChannelNorm::forward(const float* x, float* y, int rows) const {
  kernels().channel_norm(x, y, rows, dim_, gamma_.data(), beta_.data(), kEps);
}

// ---- CausalConv3x3 ---------------------------------------------------------

CausalConv3x3::CausalConv3x3(const Weights& w, int c_in, int c_out, bool transposed)
    : c_in_(c_in),
      c_out_(c_out),
      weight_(9 * static_cast<std::size_t>(c_in) * c_out),
      bias_(c_out) {
  const float* src = transposed ? w.get("weight", {c_in, c_out, 3, 3})
                                : w.get("weight", {c_out, c_in, 3, 3});
  // Column (kt, kf, c): frame t-2+kt, bin f-1+kf, input channel c.
  for (int kt = 0; kt < 3; ++kt)
    for (int kf = 0; kf < 3; ++kf)
      for (int c = 0; c < c_in; ++c)
        for (int o = 0; o < c_out; ++o) {
          // A stride-1 transposed conv is a conv with the kernel flipped in both axes.
          const float v = transposed ? src[((c * c_out + o) * 3 + (2 - kt)) * 3 + (2 - kf)]
                                     : src[((o * c_in + c) * 3 + kt) * 3 + kf];
          weight_[((kt * 3 + kf) * c_in + c) * c_out + o] = v;
        }
  std::memcpy(bias_.data(), w.get("bias", {c_out}), sizeof(float) * c_out);
}

CausalConv3x3::State CausalConv3x3::new_state() const {
  return {Buffer(2 * static_cast<std::size_t>(F) * c_in_),
          Buffer(static_cast<std::size_t>(F) * 9 * c_in_)};
}

void CausalConv3x3::step(State& s, const float* x, float* y) const {
  const int frame = F * c_in_, width = 9 * c_in_;
  float* history = s.history.data();
  const float* frames[3] = {history, history + frame, x};
  // im2col: row f holds frames t-2..t at bins f-1..f+1 (zeros past the edges).
  // A frame's bins f-1..f+1 are contiguous: one copy per frame and bin (a
  // loop per tap and channel cost 2-3x as much).
  float* __restrict cols = s.columns.data();
  const std::size_t bin = sizeof(float) * c_in_;
  for (int kt = 0; kt < 3; ++kt) {
    const float* __restrict src = frames[kt];
    float* __restrict dst = cols + kt * 3 * c_in_;
    std::memset(dst, 0, bin);
    std::memcpy(dst + c_in_, src, 2 * bin);
    for (int f = 1; f < F - 1; ++f) std::memcpy(dst + f * width, src + (f - 1) * c_in_, 3 * bin);
    std::memcpy(dst + (F - 1) * width, src + (F - 2) * c_in_, 2 * bin);
    std::memset(dst + (F - 1) * width + 2 * c_in_, 0, bin);
  }
  kernels().gemm(cols, F, width, weight_.data(), c_out_, bias_.data(), y, false);
  std::memcpy(history, history + frame, sizeof(float) * frame);
  std::memcpy(history + frame, x, sizeof(float) * frame);
}

// ---- LSTMs -----------------------------------------------------------------

namespace {

// W_hh [4h x h] -> its transpose [h x 4h] for vector-matrix products.
void pack_recurrent(const float* whh, int hidden, float* out) {
  for (int j = 0; j < 4 * hidden; ++j)
    for (int k = 0; k < hidden; ++k) out[k * 4 * hidden + j] = whh[j * hidden + k];
}

}  // namespace

FreqBiLstm::FreqBiLstm(const Weights& w, int dim, int hidden)
    : dim_(dim), hidden_(hidden) {
  const int g = 4 * hidden;
  std::vector<float> wih(static_cast<std::size_t>(2) * g * dim), bias(2 * g);
  const char* suffix[2] = {"", "_reverse"};
  for (int d = 0; d < 2; ++d) {
    const std::string s = suffix[d];
    const float* wi = w.get("weight_ih_l0" + s, {g, dim});
    const float* bi = w.get("bias_ih_l0" + s, {g});
    const float* bh = w.get("bias_hh_l0" + s, {g});
    std::memcpy(wih.data() + d * g * dim, wi, sizeof(float) * g * dim);
    for (int j = 0; j < g; ++j) bias[d * g + j] = bi[j] + bh[j];
    recurrent_[d] = Buffer(static_cast<std::size_t>(hidden) * g);
    pack_recurrent(w.get("weight_hh_l0" + s, {g, hidden}), hidden, recurrent_[d].data());
  }
  input_ = Linear(wih.data(), bias.data(), dim, 2 * g);
}

FreqBiLstm::State FreqBiLstm::new_state() const {
  return {Buffer(static_cast<std::size_t>(F) * 8 * hidden_), Buffer(6 * hidden_)};
}

void FreqBiLstm::forward(State& s, const float* x, float* y) const {
  const int h = hidden_, g = 4 * h;
  if (kernels().bilstm(x, dim_, input_.weight_t(), input_.bias(), F, recurrent_[0].data(),
                       recurrent_[1].data(), h, y))
    return;
  input_.forward(x, F, s.gates.data());
  for (int d = 0; d < 2; ++d)
    kernels().lstm_sequence(s.gates.data() + d * g, 2 * g, F, d == 1, recurrent_[d].data(), h,
                            y + d * h, 2 * h, s.step_gates.data());
}

TimeLstm::TimeLstm(const Weights& w, int dim, int hidden)
    : hidden_(hidden), recurrent_(static_cast<std::size_t>(hidden) * 4 * hidden) {
  const int g = 4 * hidden;
  const float* bi = w.get("bias_ih_l0", {g});
  const float* bh = w.get("bias_hh_l0", {g});
  std::vector<float> bias(g);
  for (int j = 0; j < g; ++j) bias[j] = bi[j] + bh[j];
  input_ = Linear(w.get("weight_ih_l0", {g, dim}), bias.data(), dim, g);
  pack_recurrent(w.get("weight_hh_l0", {g, hidden}), hidden, recurrent_.data());
}

TimeLstm::State TimeLstm::new_state() const {
  const std::size_t n = static_cast<std::size_t>(F) * hidden_;
  return {Buffer(4 * n), Buffer(n), Buffer(n)};
}

void TimeLstm::step(State& s, const float* x, float* y) const {
  const int h = hidden_, g = 4 * h;
  const Kernels& k = kernels();
  if (!k.lstm_rows(x, input_.in(), input_.weight_t(), recurrent_.data(), input_.bias(), F, h,
                   s.c.data(), s.h.data())) {
    input_.forward(x, F, s.gates.data());
    k.gemm(s.h.data(), F, h, recurrent_.data(), g, nullptr, s.gates.data(), true);
    k.lstm_cells(s.gates.data(), F, h, s.c.data(), s.h.data());
  }
  std::memcpy(y, s.h.data(), sizeof(float) * F * h);
}

// ---- Attention -------------------------------------------------------------

HeadProjection::HeadProjection(const Weights& w, int in, int heads, int per_head)
    : heads_(heads),
      per_head_(per_head),
      map_(w, in, heads * per_head),
      gamma_(static_cast<std::size_t>(F) * heads * per_head),
      beta_(static_cast<std::size_t>(F) * heads * per_head),
      slope_(heads * per_head) {
  const int width = heads * per_head;
  const float* prelu = w.get("prelu", {heads});
  for (int c = 0; c < width; ++c) slope_[c] = prelu[c / per_head];
  const float* nw = w.get("norm_weight", {heads, per_head, F});
  const float* nb = w.get("norm_bias", {heads, per_head, F});
  for (int c = 0; c < width; ++c)
    for (int f = 0; f < F; ++f) {
      gamma_[f * width + c] = nw[c * F + f];
      beta_[f * width + c] = nb[c * F + f];
    }
}

void HeadProjection::forward(const float* x, float* y, float* scratch) const {
  map_.forward(x, F, y);
  kernels().head_norm(y, F, width(), per_head_, slope_.data(), gamma_.data(), beta_.data(), kEps,
                      scratch);
}

FrameAttention::FrameAttention(const Weights& w, int dim, int heads, int e, int frames)
    : dim_(dim),
      heads_(heads),
      e_(e),
      frames_(frames),
      scale_(1.f / std::sqrt(static_cast<float>(e * F))),
      query_(w / "query", dim, heads, e),
      key_(w / "key", dim, heads, e),
      value_(w / "value", dim, heads, dim / heads),
      out_(w / "out", dim, 1, dim) {}

FrameAttention::State FrameAttention::new_state() const {
  const std::size_t qk = static_cast<std::size_t>(heads_) * e_;
  State s;
  s.keys = Buffer(static_cast<std::size_t>(frames_) * F * qk);
  s.values = Buffer(static_cast<std::size_t>(frames_) * F * dim_);
  s.q = Buffer(F * qk);
  s.scores = Buffer(static_cast<std::size_t>(frames_) * heads_);
  s.head_max = Buffer(heads_);
  s.head_sum = Buffer(heads_);
  s.column_weight = Buffer(static_cast<std::size_t>(frames_) * dim_);
  s.mixed = Buffer(F * std::max<std::size_t>(dim_, qk));
  s.norm_scratch = Buffer(2 * std::max<std::size_t>(dim_, qk));
  return s;
}

namespace {

// [bins x heads*e] -> [heads x bins*e]: each head's flattened vector contiguous.
// Written in order, a head at a time, with e known to the compiler where it
// can be (the index arithmetic of the general loop cost 4 cycles a float).
template <int E>
void split_heads_fixed(const float* __restrict x, int heads, float* __restrict y) {
  const int width = heads * E;
  for (int h = 0; h < heads; ++h, y += F * E)
    for (int f = 0; f < F; ++f)
      for (int j = 0; j < E; ++j) y[f * E + j] = x[f * width + h * E + j];
}

void split_heads(const float* __restrict x, int heads, int e, float* __restrict y) {
  switch (e) {
    case 1: return split_heads_fixed<1>(x, heads, y);
    case 2: return split_heads_fixed<2>(x, heads, y);
    case 3: return split_heads_fixed<3>(x, heads, y);
    case 4: return split_heads_fixed<4>(x, heads, y);
    case 6: return split_heads_fixed<6>(x, heads, y);
    case 8: return split_heads_fixed<8>(x, heads, y);
  }
  for (int h = 0; h < heads; ++h)
    for (int f = 0; f < F; ++f)
      for (int j = 0; j < e; ++j) y[(h * F + f) * e + j] = x[(f * heads + h) * e + j];
}

}  // namespace

void FrameAttention::project_kv(State& st, const float* kv_in, int slot) const {
  const std::size_t key_frame = static_cast<std::size_t>(F) * heads_ * e_;
  key_.forward(kv_in, st.mixed.data(), st.norm_scratch.data());
  split_heads(st.mixed.data(), heads_, e_, st.keys.data() + slot * key_frame);
  value_.forward(kv_in, st.values.data() + static_cast<std::size_t>(slot) * F * dim_,
                 st.norm_scratch.data());
}

void FrameAttention::rewrite(State& st, const float* kv_in, int lag) const {
  if (lag < 1 || lag > st.count || lag >= frames_) return;
  project_kv(st, kv_in, (st.next - lag + frames_) % frames_);
}

void FrameAttention::step(State& st, const float* q_in, const float* kv_in, float* update,
                          StageClock* clock, int index, bool merge,
                          const float* lag_bias) const {
  static const char* const kLaps[2][4] = {
      {"attention: q, k, v", "attention: scores", "attention: weighted sum", "attention: out"},
      {"merge: q, k, v", "merge: scores", "merge: weighted sum", "merge: out"}};
  const char* const* laps = kLaps[merge ? 1 : 0];
  const int qk = heads_ * e_, dv = dim_ / heads_, per_head = F * e_;
  const std::size_t key_frame = static_cast<std::size_t>(F) * qk;
  float* mixed = st.mixed.data();  // free until the weighted sum
  float* norm_scratch = st.norm_scratch.data();
  float* scores = st.scores.data();
  float* head_max = st.head_max.data();
  float* head_sum = st.head_sum.data();
  query_.forward(q_in, mixed, norm_scratch);
  split_heads(mixed, heads_, e_, st.q.data());
  project_kv(st, kv_in, st.next);
  const int newest = st.next;
  st.next = (st.next + 1) % frames_;
  st.count = std::min(st.count + 1, frames_);
  const int count = st.count;
  if (clock) clock->lap(laps[0], index);

  // Scores of every valid frame (slots 0..count-1; their order does not matter).
  for (int h = 0; h < heads_; ++h) {
    kernels().dot_many(st.q.data() + h * per_head, st.keys.data() + h * per_head,
                       static_cast<long>(key_frame), count, per_head, scores + h, heads_);
    float top = -INFINITY;
    for (int s = 0; s < count; ++s) {
      scores[s * heads_ + h] *= scale_;
      if (lag_bias)
        scores[s * heads_ + h] += lag_bias[h * frames_ + (newest - s + frames_) % frames_];
      top = std::max(top, scores[s * heads_ + h]);
    }
    head_max[h] = top;
  }
  for (int s = 0; s < count; ++s)
    for (int h = 0; h < heads_; ++h) scores[s * heads_ + h] -= head_max[h];
  kernels().exp_inplace(scores, count * heads_);
  for (int h = 0; h < heads_; ++h) head_sum[h] = 0.f;
  for (int s = 0; s < count; ++s)
    for (int h = 0; h < heads_; ++h) head_sum[h] += scores[s * heads_ + h];
  if (clock) clock->lap(laps[1], index);

  // Softmax-weighted sum of the values, all heads at once: per-column weights
  // of every frame, then for each bin one pass over the frames.
  float* __restrict weight = st.column_weight.data();
  for (int h = 0; h < heads_; ++h) head_sum[h] = 1.f / head_sum[h];
  for (int s = 0; s < count; ++s)
    for (int h = 0; h < heads_; ++h) {
      const float w = scores[s * heads_ + h] * head_sum[h];
      for (int j = h * dv; j < (h + 1) * dv; ++j) weight[s * dim_ + j] = w;
    }
  kernels().weighted_sum(weight, st.values.data(), static_cast<long>(F) * dim_, count, F, dim_,
                         mixed);
  if (clock) clock->lap(laps[2], index);
  out_.forward(mixed, update, norm_scratch);
  if (clock) clock->lap(laps[3], index);
}

}  // namespace kb
