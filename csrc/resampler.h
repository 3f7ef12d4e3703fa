// Streaming rational resampling, sample by sample, for the audio stream: a
// polyphase FIR (up by L, down by M) whose taps are designed when the stream
// opens (kboost_rt/resampling.py), and RateAdapter, which runs 16 kHz,
// 128-sample chunks (the processor's) on a device at another rate.
// Sized once at construction; process() never allocates.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>


namespace kb {

class Resampler {
 public:
  // taps: [up x per_phase], phase p holding prototype taps p, p + up, ...
  Resampler(int up, int down, int channels, const float* taps, int per_phase);
  // Interleaved frames in -> interleaved frames out; returns the frames
  // written. `out` must hold max_output(n_in) frames.
  int process(const float* in, int n_in, float* out);
  int max_output(int n_in) const { return static_cast<int>((int64_t{n_in} * up_) / down_) + 1; }
  void reset();

 private:
  int up_, down_, channels_, k_;
  std::vector<float> taps_;     // [up][k], reversed: tap k-1-m pairs with the m-th oldest sample
  std::vector<float> history_;  // [channels][2k]: each sample written twice, so the last k are contiguous
  int write_ = 0;               // where the next input sample goes, 0..k-1
  int64_t consumed_ = 0;        // input frames taken so far
  int64_t produced_ = 0;        // output frames made so far
};

// A fixed-capacity FIFO of interleaved frames.
class FrameFifo {
 public:
  FrameFifo(int capacity, int channels) : buf_(static_cast<std::size_t>(capacity) * channels),
                                          capacity_(capacity), channels_(channels) {}
  int size() const { return size_; }
  bool push(const float* frames, int n);  // false (nothing pushed) if it would overflow
  void pop(float* frames, int n);         // n <= size()
  void clear() { start_ = size_ = 0; }

 private:
  std::vector<float> buf_;
  int capacity_, channels_, start_ = 0, size_ = 0;
};

// Runs one chunk: input [channels x 128] planar -> mix [channels x 128].
using ChunkFn = void (*)(void* user, const float* input, float* mix);

class RateAdapter {
 public:
  // Device at `rate` with `frames`-frame buffers; down: device -> 16 kHz,
  // up: 16 kHz -> device (taps as for Resampler).
  RateAdapter(int channels, int rate, int frames, int down_l, int down_m, const float* down_taps,
              int down_k, int up_l, int up_m, const float* up_taps, int up_k);
  // One device buffer: interleaved in -> interleaved out (n == frames), each
  // whole 16 kHz chunk run through `run`.
  void process(const float* in, float* out, int n, ChunkFn run, void* user);
  int prefill() const { return prefill_; }  // frames of silence the output starts with
  uint64_t underruns() const { return underruns_.load(std::memory_order_relaxed); }

 private:
  int measure_prefill(int down_l, int down_m, const float* down_taps, int down_k, int up_l,
                      int up_m, const float* up_taps, int up_k) const;

  int channels_, frames_, prefill_ = 0;
  Resampler down_, up_;
  FrameFifo in_fifo_, out_fifo_;
  std::vector<float> scratch_in_, scratch_out_, chunk_i_, chunk_, mix_, mix_i_;
  std::atomic<uint64_t> underruns_{0};
};

}  // namespace kb
