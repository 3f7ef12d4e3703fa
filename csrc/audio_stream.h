// A duplex PortAudio stream whose callback runs the Processor and nothing
// else: no interpreter, no locks, no allocation, no system calls (but one, at
// the first callback, to ask for real-time priority). At 16 kHz with
// 128-frame buffers the device feeds the processor's chunks directly; at
// any other rate or buffer size a RateAdapter resamples and re-chunks inside
// the same callback.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <memory>

#include "processor.h"
#include "resampler.h"
#include "time_histogram.h"

struct PaStreamCallbackTimeInfo;  // portaudio.h, included by the .cpp only

namespace kb {

struct ResamplerTaps {
  int up = 1, down = 1, per_phase = 0;
  const float* taps = nullptr;  // [up x per_phase]; copied at construction
};

struct StreamOptions {
  int input_device = -1;   // PortAudio device index; -1: the default device
  int output_device = -1;
  int64_t record_chunks = 0;  // keep the first N chunks of input and output
  int rate = 16000;           // the device's rate and buffer size; other than
  int frames = 128;           // 16 kHz / 128 frames needs both resamplers:
  ResamplerTaps down, up;     // device -> 16 kHz and 16 kHz -> device
  // Latency probe: the input is replaced by silence with one click at this
  // device frame, and the output's loudest frame after it is recorded. -1: off.
  int64_t probe_frame = -1;
};

struct LatencyProbe {
  int64_t click_frame = -1;  // the device frame the click was put into the input at
  int64_t peak_frame = -1;   // the output frame where it came out loudest
  float peak = 0.f;
  double input_latency_s = 0, output_latency_s = 0;  // what PortAudio reports for the device
};

struct StreamStats {
  uint64_t callbacks = 0;
  uint64_t xruns = 0;        // callbacks flagged with input overflow / output underflow
  uint64_t wrong_sizes = 0;  // callbacks of other than 128 frames (answered with silence)
  int realtime = -1;         // -1: not asked yet, 0: refused, 1: real-time scheduling
  uint64_t underruns = 0;    // resampled buffers the output FIFO could not fill
};

class AudioStream {
 public:
  // Opens the stream (not started); throws std::runtime_error with
  // PortAudio's message. The processor must outlive the stream.
  AudioStream(Processor& processor, const StreamOptions& options);
  ~AudioStream();
  AudioStream(const AudioStream&) = delete;
  AudioStream& operator=(const AudioStream&) = delete;

  void start();
  void stop();
  bool active() const;

  StreamStats stats() const;
  const TimeHistogram& callback_time() const { return callback_time_; }
  // [channels x recorded() * 128], planar; read after stop().
  const float* recorded_input() const { return record_in_.data(); }
  const float* recorded_output() const { return record_out_.data(); }
  int64_t recorded() const { return recorded_.load(std::memory_order_acquire); }
  int64_t record_capacity() const { return record_chunks_; }
  // Frames of silence the resampled output starts with (its added latency); 0 at 16 kHz.
  int prefill() const { return adapter_ ? adapter_->prefill() : 0; }
  LatencyProbe latency_probe() const;  // read after stop()

 private:
  static int callback(const void* input, void* output, unsigned long frames,
                      const ::PaStreamCallbackTimeInfo* time_info, unsigned long flags,
                      void* self);
  int run(const float* input, float* output, unsigned long frames, unsigned long flags);
  static void run_chunk(void* self, const float* input, float* mix);
  void record(const float* input, const float* mix);

  Processor& processor_;
  void* stream_ = nullptr;  // PaStream*
  int channels_, frames_;
  std::unique_ptr<RateAdapter> adapter_;
  std::vector<float> in_, mix_;  // one chunk, planar
  std::vector<float> probe_in_;  // one device buffer, interleaved
  int64_t probe_frame_, frames_done_ = 0, peak_frame_ = -1;
  float peak_ = 0.f;
  std::vector<float> record_in_, record_out_;
  int64_t record_chunks_;
  std::atomic<int64_t> recorded_{0};
  std::atomic<uint64_t> callbacks_{0}, xruns_{0}, wrong_sizes_{0};
  std::atomic<int> realtime_{-1};
  TimeHistogram callback_time_;
};

}  // namespace kb
