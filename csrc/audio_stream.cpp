#include "audio_stream.h"

#include <portaudio.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "signal_path.h"

namespace kb {

namespace {

void check(PaError error, const char* what) {
  if (error != paNoError)
    throw std::runtime_error(std::string(what) + ": " + Pa_GetErrorText(error));
}

// Asks for SCHED_FIFO unless the thread already runs under a real-time policy.
int ask_for_realtime() {
  int policy = 0;
  sched_param param{};
  if (pthread_getschedparam(pthread_self(), &policy, &param) == 0 &&
      (policy == SCHED_FIFO || policy == SCHED_RR))
    return 1;
  param.sched_priority = std::min(70, sched_get_priority_max(SCHED_FIFO));
  return pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0 ? 1 : 0;
}

}  // namespace

AudioStream::AudioStream(Processor& processor, const StreamOptions& options)
    : processor_(processor),
      channels_(processor.channels()),
      frames_(options.frames),
      in_(static_cast<std::size_t>(channels_) * kChunk),
      mix_(in_.size()),
      probe_in_(static_cast<std::size_t>(options.frames) * processor.channels()),
      probe_frame_(options.probe_frame),
      record_in_(static_cast<std::size_t>(options.record_chunks) * channels_ * kChunk),
      record_out_(record_in_.size()),
      record_chunks_(options.record_chunks) {
  if (options.rate != kSampleRate || options.frames != kChunk) {
    const ResamplerTaps& d = options.down;
    const ResamplerTaps& u = options.up;
    adapter_ = std::make_unique<RateAdapter>(processor.channels(), options.rate, options.frames, d.up, d.down,
                                             d.taps, d.per_phase, u.up, u.down, u.taps,
                                             u.per_phase);
  }
  check(Pa_Initialize(), "PortAudio");
  try {
    PaStreamParameters in{}, out{};
    in.device = options.input_device >= 0 ? options.input_device : Pa_GetDefaultInputDevice();
    out.device = options.output_device >= 0 ? options.output_device : Pa_GetDefaultOutputDevice();
    if (in.device == paNoDevice || out.device == paNoDevice)
      throw std::runtime_error("no default audio input or output device");
    if (in.device >= Pa_GetDeviceCount() || out.device >= Pa_GetDeviceCount())
      throw std::runtime_error("no audio device with that index");
    in.channelCount = out.channelCount = channels_;
    in.sampleFormat = out.sampleFormat = paFloat32;
    in.suggestedLatency = Pa_GetDeviceInfo(in.device)->defaultLowInputLatency;
    out.suggestedLatency = Pa_GetDeviceInfo(out.device)->defaultLowOutputLatency;
    PaStream* stream = nullptr;
    check(Pa_OpenStream(&stream, &in, &out, options.rate, options.frames, paClipOff,
                        &AudioStream::callback, this),
          "cannot open the audio stream");
    stream_ = stream;
  } catch (...) {
    Pa_Terminate();
    throw;
  }
}

AudioStream::~AudioStream() {
  if (stream_) {
    Pa_StopStream(static_cast<PaStream*>(stream_));
    Pa_CloseStream(static_cast<PaStream*>(stream_));
  }
  Pa_Terminate();
}

void AudioStream::start() { check(Pa_StartStream(static_cast<PaStream*>(stream_)), "start"); }

void AudioStream::stop() {
  PaStream* s = static_cast<PaStream*>(stream_);
  if (Pa_IsStreamActive(s) == 1) check(Pa_StopStream(s), "stop");
}

bool AudioStream::active() const { return Pa_IsStreamActive(static_cast<PaStream*>(stream_)) == 1; }

LatencyProbe AudioStream::latency_probe() const {
  LatencyProbe p;
  p.click_frame = probe_frame_;
  p.peak_frame = peak_frame_;
  p.peak = peak_;
  if (const PaStreamInfo* info = Pa_GetStreamInfo(static_cast<PaStream*>(stream_))) {
    p.input_latency_s = info->inputLatency;
    p.output_latency_s = info->outputLatency;
  }
  return p;
}

StreamStats AudioStream::stats() const {
  StreamStats s;
  s.callbacks = callbacks_.load(std::memory_order_relaxed);
  s.xruns = xruns_.load(std::memory_order_relaxed);
  s.wrong_sizes = wrong_sizes_.load(std::memory_order_relaxed);
  s.realtime = realtime_.load(std::memory_order_relaxed);
  s.underruns = adapter_ ? adapter_->underruns() : 0;
  return s;
}

int AudioStream::callback(const void* input, void* output, unsigned long frames,
                          const PaStreamCallbackTimeInfo*, unsigned long flags, void* self) {
  return static_cast<AudioStream*>(self)->run(static_cast<const float*>(input),
                                              static_cast<float*>(output), frames, flags);
}

void AudioStream::run_chunk(void* self, const float* input, float* mix) {
  auto* stream = static_cast<AudioStream*>(self);
  stream->processor_.process(input, mix);
  stream->record(input, mix);
}

void AudioStream::record(const float* input, const float* mix) {
  const int64_t k = recorded_.load(std::memory_order_relaxed);
  if (k >= record_chunks_) return;
  for (int c = 0; c < channels_; ++c) {
    const std::size_t at = (static_cast<std::size_t>(c) * record_chunks_ + k) * kChunk;
    std::memcpy(&record_in_[at], input + c * kChunk, sizeof(float) * kChunk);
    std::memcpy(&record_out_[at], mix + c * kChunk, sizeof(float) * kChunk);
  }
  recorded_.store(k + 1, std::memory_order_release);
}

int AudioStream::run(const float* input, float* output, unsigned long frames,
                     unsigned long flags) {
  const auto start = std::chrono::steady_clock::now();
  if (realtime_.load(std::memory_order_relaxed) < 0)
    realtime_.store(ask_for_realtime(), std::memory_order_relaxed);
  callbacks_.fetch_add(1, std::memory_order_relaxed);
  if (flags & (paInputOverflow | paOutputUnderflow | paInputUnderflow | paOutputOverflow))
    xruns_.fetch_add(1, std::memory_order_relaxed);
  const int m = channels_;
  if (frames != static_cast<unsigned long>(frames_) || input == nullptr) {
    wrong_sizes_.fetch_add(1, std::memory_order_relaxed);
    std::memset(output, 0, sizeof(float) * m * frames);
    frames_done_ += static_cast<int64_t>(frames);
    return paContinue;
  }
  const int64_t first = frames_done_;
  if (probe_frame_ >= 0) {  // silence, and one click on every channel
    std::fill(probe_in_.begin(), probe_in_.end(), 0.f);
    if (probe_frame_ >= first && probe_frame_ < first + frames_)
      for (int c = 0; c < m; ++c) probe_in_[(probe_frame_ - first) * m + c] = 1.f;
    input = probe_in_.data();
  }
  if (adapter_) {
    adapter_->process(input, output, frames_, &AudioStream::run_chunk, this);
  } else {
    for (int n = 0; n < kChunk; ++n)
      for (int c = 0; c < m; ++c) in_[c * kChunk + n] = input[n * m + c];
    processor_.process(in_.data(), mix_.data());
    for (int n = 0; n < kChunk; ++n)
      for (int c = 0; c < m; ++c) output[n * m + c] = mix_[c * kChunk + n];
    record(in_.data(), mix_.data());
  }
  if (probe_frame_ >= 0) {
    for (int i = 0; i < frames_; ++i) {
      const float v = std::fabs(output[i * m]);
      if (first + i >= probe_frame_ && v > peak_) {
        peak_ = v;
        peak_frame_ = first + i;
      }
    }
  }
  frames_done_ += frames_;
  callback_time_.record(std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - start).count());
  return paContinue;
}

}  // namespace kb
