// Python bindings of the native core: a thin layer that checks shapes and
// converts arrays; all the work is in the plain C++ classes.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <complex>
#include <cstring>
#include <thread>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "engine.h"
#include "hint_link.h"
#include "kernels.h"
#include "processor.h"
#include "resampler.h"
#include "stft.h"
#ifdef KB_HAVE_PORTAUDIO
#include "audio_stream.h"
#endif

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ComplexArray = py::array_t<std::complex<float>, py::array::c_style | py::array::forcecast>;

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// For the per-chunk calls: the message is built only when the check fails, so
// a call that passes allocates nothing.
template <typename Message, typename = std::enable_if_t<std::is_invocable_v<Message>>>
void require(bool ok, Message&& message) {
  if (!ok) throw std::invalid_argument(message());
}

// [channels, samples] -> [channels, frames, 97]; frame k is samples
// 128k .. 128k+191, zero-padded past the end; frames = ceil(samples / 128).
ComplexArray stft(const FloatArray& signal) {
  require(signal.ndim() == 2, "stft: expected a [channels, samples] array");
  const py::ssize_t channels = signal.shape(0), samples = signal.shape(1);
  const py::ssize_t frames = (samples + kb::kChunk - 1) / kb::kChunk;
  ComplexArray out({channels, frames, static_cast<py::ssize_t>(kb::kBins)});
  const float* x = signal.data();
  auto* y = out.mutable_data();
  {
    py::gil_scoped_release release;
    kb::StftAnalyzer analyzer;
    std::vector<float> frame(kb::kWindow), re(kb::kBins), im(kb::kBins);
    for (py::ssize_t c = 0; c < channels; ++c) {
      for (py::ssize_t k = 0; k < frames; ++k) {
        for (int n = 0; n < kb::kWindow; ++n) {
          const py::ssize_t i = k * kb::kChunk + n;
          frame[n] = i < samples ? x[c * samples + i] : 0.f;
        }
        analyzer.analyze(frame.data(), re.data(), im.data());
        for (int f = 0; f < kb::kBins; ++f)
          y[(c * frames + k) * kb::kBins + f] = std::complex<float>(re[f], im[f]);
      }
    }
  }
  return out;
}

// [channels, frames, 97] -> [channels, length]; length defaults to 128 * frames.
FloatArray istft(const ComplexArray& spec, py::ssize_t length) {
  require(spec.ndim() == 3 && spec.shape(2) == kb::kBins,
          "istft: expected a [channels, frames, 97] complex array");
  const py::ssize_t channels = spec.shape(0), frames = spec.shape(1);
  const py::ssize_t full = frames * kb::kChunk;
  if (length < 0) length = full;
  require(length <= full, "istft: length exceeds 128 * frames");
  FloatArray out({channels, length});
  const auto* x = spec.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release release;
    kb::IstftBank synth(1);
    std::vector<float> packed(2 * kb::kBins), chunk(kb::kChunk);
    for (py::ssize_t c = 0; c < channels; ++c) {
      synth.reset();
      for (py::ssize_t k = 0; k < frames; ++k) {
        for (int f = 0; f < kb::kBins; ++f) {
          packed[f] = x[(c * frames + k) * kb::kBins + f].real();
          packed[kb::kBins + f] = x[(c * frames + k) * kb::kBins + f].imag();
        }
        synth.process(packed.data(), chunk.data());
        for (int n = 0; n < kb::kChunk; ++n) {
          const py::ssize_t i = k * kb::kChunk + n;
          if (i < length) y[c * length + i] = chunk[n];
        }
      }
    }
  }
  return out;
}

kb::EngineConfig engine_config(const py::dict& d) {
  kb::EngineConfig c;
  auto get = [&](const char* key, int& field) {
    if (d.contains(key)) field = d[key].cast<int>();
  };
  const std::string role = d["role"].cast<std::string>();
  if (role == "small") c.role = kb::Role::kSmall;
  else if (role == "large") c.role = kb::Role::kLarge;
  else if (role == "boosted") c.role = kb::Role::kBoosted;
  else throw std::invalid_argument("engine config: unknown role '" + role + "'");
#define KB_GET(field) get(#field, c.field);
  KB_ENGINE_CONFIG_INT_FIELDS(KB_GET)
#undef KB_GET
  return c;
}

// The data of a numpy array the engine may write into directly: float32,
// C-contiguous, writeable and of this shape; null otherwise (never a
// converted copy, whose writes the caller would not see).
float* writable_floats(const py::object& obj, std::initializer_list<py::ssize_t> shape) {
  if (!py::isinstance<py::array>(obj)) return nullptr;
  auto a = obj.cast<py::array>();
  if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
      !a.writeable() || a.ndim() != static_cast<py::ssize_t>(shape.size()))
    return nullptr;
  py::ssize_t i = 0;
  for (const py::ssize_t n : shape)
    if (a.shape(i++) != n) return nullptr;
  return static_cast<float*>(a.mutable_data());
}

std::shared_ptr<const kb::Model> build_model(const py::dict& config, const py::dict& tensors) {
  // Keep float32 C-contiguous copies alive only while the model packs them.
  std::vector<FloatArray> keep;
  kb::TensorMap map;
  for (auto item : tensors) {
    auto name = item.first.cast<std::string>();
    FloatArray a = FloatArray::ensure(item.second);
    if (!a) throw std::invalid_argument("tensor '" + name + "' is not a float array");
    kb::TensorRef ref{a.data(), {}};
    for (py::ssize_t i = 0; i < a.ndim(); ++i) ref.shape.push_back(a.shape(i));
    map.emplace(name, ref);
    keep.push_back(a);
  }
  const kb::EngineConfig cfg = engine_config(config);
  // Packing the weights is plain C++: other Python threads (the hint server's
  // network thread) run meanwhile.
  py::gil_scoped_release release;
  return std::make_shared<const kb::Model>(cfg, map);
}

std::unique_ptr<kb::Engine> build_engine(const py::dict& config, const py::dict& tensors) {
  return std::make_unique<kb::Engine>(build_model(config, tensors));
}

// A model's packed weights, shared by the engines made from it.
struct PyModel {
  std::shared_ptr<const kb::Model> model;
};

// Owns the engine (one stream of a model); checks shapes, then runs the step
// without the GIL.
class PyEngine {
 public:
  explicit PyEngine(std::shared_ptr<const kb::Model> model) {
    {
      py::gil_scoped_release release;  // zeroing a large model's rings takes a while
      engine_ = std::make_unique<kb::Engine>(std::move(model));
    }
    const auto& c = engine_->config();
    hint_size_ = static_cast<py::ssize_t>(c.hint_channels) * kb::kBins;
  }
  PyEngine(const py::dict& config, const py::dict& tensors)
      : PyEngine(build_model(config, tensors)) {}

  // chunk [channels, 128]; hint [hint_channels, 97] or None; out [sources, channels, 128].
  void process_into(const FloatArray& chunk, const py::object& hint, const py::object& out_obj,
                    const py::object& hint_out) {
    const auto& c = engine_->config();
    require(chunk.ndim() == 2 && chunk.shape(0) == c.channels && chunk.shape(1) == kb::kChunk,
            [&] {
              return "process: chunk must be [" + std::to_string(c.channels) + ", 128] float32";
            });
    float* out_ptr = writable_floats(out_obj, {c.sources, c.channels, kb::kChunk});
    require(out_ptr != nullptr,
            "process: out must be a writeable C-contiguous float32 [sources, channels, 128] "
            "array");
    const float* hint_ptr = nullptr;
    FloatArray hint_arr;
    if (!hint.is_none()) {
      require(c.role == kb::Role::kBoosted, "process: only a boosted engine takes hints");
      require(!engine_->any_delay(),
              "process: an any-delay engine takes hints with their ages (process_aged_into)");
      hint_arr = FloatArray::ensure(hint);
      require(hint_arr && hint_arr.ndim() == 2 && hint_arr.shape(0) == c.hint_channels &&
                  hint_arr.shape(1) == kb::kBins,
              [&] {
                return "process: hint must be [" + std::to_string(c.hint_channels) + ", 97]";
              });
      hint_ptr = hint_arr.data();
    }
    float* hint_out_ptr = nullptr;
    if (!hint_out.is_none()) {
      hint_out_ptr = writable_floats(hint_out, {c.hint_channels, kb::kBins});
      require(engine_->makes_hints() && hint_out_ptr != nullptr,
              "process: hint_out needs a large engine with a hint generator and a "
              "writeable C-contiguous float32 [hint_channels, 97] array");
    }
    const float* in_ptr = chunk.data();
    py::gil_scoped_release release;
    engine_->process(in_ptr, hint_ptr, out_ptr, hint_out_ptr);
  }

  // Any-delay boosted engines: hints [K, hint_channels, 97] that arrived at
  // this chunk, ages [K] (chunks since the chunk each was made from).
  void process_aged_into(const FloatArray& chunk, const FloatArray& hints,
                         const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& ages,
                         const py::object& out_obj) {
    const auto& c = engine_->config();
    require(engine_->any_delay(), "process_aged_into: needs an any-delay boosted engine");
    require(chunk.ndim() == 2 && chunk.shape(0) == c.channels && chunk.shape(1) == kb::kChunk,
            [&] {
              return "process: chunk must be [" + std::to_string(c.channels) + ", 128] float32";
            });
    float* out_ptr = writable_floats(out_obj, {c.sources, c.channels, kb::kChunk});
    require(out_ptr != nullptr,
            "process: out must be a writeable C-contiguous float32 [sources, channels, 128] "
            "array");
    const py::ssize_t k = ages.ndim() == 1 ? ages.shape(0) : -1;
    require(k >= 0 && hints.ndim() == 3 && hints.shape(0) == k &&
                hints.shape(1) == c.hint_channels && hints.shape(2) == kb::kBins,
            [&] {
              return "process: hints must be [K, " + std::to_string(c.hint_channels) +
                     ", 97] with ages [K]";
            });
    // Later hints of an age replace earlier ones: the last kMax are all that count.
    constexpr py::ssize_t kMax = 64;
    kb::HintArrival arrivals[kMax];
    const py::ssize_t first = std::max<py::ssize_t>(0, k - kMax);
    for (py::ssize_t i = first; i < k; ++i)
      arrivals[i - first] = {hints.data() + i * hint_size_, ages.at(i)};
    const float* in_ptr = chunk.data();
    py::gil_scoped_release release;
    engine_->process(in_ptr, arrivals, static_cast<int>(k - first), out_ptr);
  }

  // Runs chunks [N, channels, 128] (hints [N, hint_channels, 97] or None)
  // back to back in C++ and returns each step's wall time in nanoseconds:
  // the kernel's own cost, without the Python call around it.
  py::array_t<int64_t> time_chunks(const FloatArray& chunks, const py::object& hints) {
    py::array_t<int64_t> times(chunks.ndim() == 3 ? chunks.shape(0) : 0);
    int64_t* t = times.mutable_data();
    run_chunks("time_chunks", chunks, hints, [&](py::ssize_t i, auto&& run) {
      const auto start = std::chrono::steady_clock::now();
      run();
      t[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::steady_clock::now() - start).count();
    });
    return times;
  }

  // Like time_chunks, with each stage of each step timed inside the real step:
  // -> (stage names, block indices, ns [N x stages]).
  py::tuple time_stages(const FloatArray& chunks, const py::object& hints) {
    kb::StageTimes times;
    std::vector<int64_t> all;
    engine_->set_stage_times(&times);
    try {
      run_chunks("time_stages", chunks, hints, [&](py::ssize_t, auto&& run) {
        run();
        all.insert(all.end(), times.ns, times.ns + times.count);
      });
    } catch (...) {
      engine_->set_stage_times(nullptr);
      throw;
    }
    engine_->set_stage_times(nullptr);
    py::list names, indices;
    for (int s = 0; s < times.count; ++s) {
      names.append(times.name[s]);
      indices.append(times.index[s]);
    }
    const py::ssize_t n = chunks.shape(0), stages = times.count;
    py::array_t<int64_t> ns({n, stages});
    if (stages && static_cast<py::ssize_t>(all.size()) == n * stages)
      std::copy(all.begin(), all.end(), ns.mutable_data());
    return py::make_tuple(names, indices, ns);
  }

  kb::Engine& engine() { return *engine_; }

 private:
  // Checks chunks [N, channels, 128] and hints [N, hint_channels, 97] (or None),
  // then runs them back to back without the GIL: step(i, run) for each chunk i,
  // where run() is that chunk's engine step.
  template <typename Step>
  void run_chunks(const char* what, const FloatArray& chunks, const py::object& hints, Step step) {
    const auto& c = engine_->config();
    require(chunks.ndim() == 3 && chunks.shape(1) == c.channels && chunks.shape(2) == kb::kChunk,
            std::string(what) + ": chunks must be [N, channels, 128]");
    const py::ssize_t n = chunks.shape(0);
    FloatArray hint_arr;
    if (!hints.is_none()) {
      hint_arr = FloatArray::ensure(hints);
      require(hint_arr && hint_arr.ndim() == 3 && hint_arr.shape(0) == n &&
                  hint_arr.size() == n * hint_size_,
              std::string(what) + ": hints must be [N, hint_channels, 97]");
    }
    std::vector<float> out(static_cast<std::size_t>(c.sources) * c.channels * kb::kChunk);
    std::vector<float> hint_out(static_cast<std::size_t>(std::max<py::ssize_t>(hint_size_, 1)));
    const float* in = chunks.data();
    const float* h = hints.is_none() ? nullptr : hint_arr.data();
    const bool make = engine_->makes_hints();
    py::gil_scoped_release release;
    if (engine_->any_delay()) {  // each chunk's hint arrives one chunk old
      for (py::ssize_t i = 0; i < n; ++i)
        step(i, [&] {
          const kb::HintArrival a{h ? h + i * hint_size_ : nullptr, 1};
          engine_->process(in + i * c.channels * kb::kChunk, &a, h ? 1 : 0, out.data());
        });
      return;
    }
    for (py::ssize_t i = 0; i < n; ++i)
      step(i, [&] {
        engine_->process(in + i * c.channels * kb::kChunk, h ? h + i * hint_size_ : nullptr,
                         out.data(), make ? hint_out.data() : nullptr);
      });
  }

  std::unique_ptr<kb::Engine> engine_;
  py::ssize_t hint_size_ = 0;
};

float* require_floats(const py::object& obj, std::initializer_list<py::ssize_t> shape,
                      const char* what) {
  float* p = writable_floats(obj, shape);
  require(p != nullptr, [&] {
    std::string dims;
    for (auto d : shape) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    return std::string(what) + " must be a writeable C-contiguous float32 [" + dims + "] array";
  });
  return p;
}

kb::Params params_from(const py::dict& d) {
  kb::Params p;
  if (d.contains("gain_db")) p.gain_db = d["gain_db"].cast<double>();
  if (d.contains("wet")) p.wet = d["wet"].cast<double>();
  if (d.contains("source")) p.source = d["source"].cast<int>();
  if (d.contains("bypass")) p.bypass = d["bypass"].cast<bool>();
  if (d.contains("boost")) p.boost = d["boost"].cast<bool>();
  return p;
}

py::dict link_counters(const kb::HintLink& link) {
  const kb::LinkCounters c = link.counters();
  py::dict d;
  d["on_time"] = c.on_time;
  d["late"] = c.late;
  d["lost"] = c.lost;
  d["queued"] = c.queued;
  d["send_dropped"] = c.send_dropped;
  return d;
}

// The real-time processor with the engines it owns.
class PyProcessor {
 public:
  PyProcessor(const py::dict& config, const py::dict& tensors,
              std::shared_ptr<kb::HintLink> link, const py::object& small_config,
              const py::object& small_tensors, int fallback_after, const py::dict& params) {
    std::unique_ptr<kb::Fallback> fallback;
    if (!small_config.is_none())
      fallback = std::make_unique<kb::Fallback>(
          build_engine(small_config.cast<py::dict>(), small_tensors.cast<py::dict>()),
          fallback_after);
    processor_ = std::make_unique<kb::Processor>(build_engine(config, tensors), std::move(link),
                                                 std::move(fallback), params_from(params));
  }

  void process(const FloatArray& chunk, const py::object& mix, const py::object& sources) {
    const int m = processor_->channels(), s = processor_->sources();
    require(chunk.ndim() == 2 && chunk.shape(0) == m && chunk.shape(1) == kb::kChunk,
            [&] { return "process: chunk must be [" + std::to_string(m) + ", 128] float32"; });
    float* mix_ptr = require_floats(mix, {m, kb::kChunk}, "process: mix");
    float* src_ptr =
        sources.is_none() ? nullptr : require_floats(sources, {s, m, kb::kChunk}, "process: sources");
    const float* in = chunk.data();
    py::gil_scoped_release release;
    processor_->process(in, mix_ptr, src_ptr);
  }

  // chunks [N, M, 128] -> mixes [N, M, 128] (and sources [N, S, M, 128] if given),
  // all in C++ without the GIL.
  void run(const FloatArray& chunks, const py::object& mixes, const py::object& sources) {
    const int m = processor_->channels(), s = processor_->sources();
    require(chunks.ndim() == 3 && chunks.shape(1) == m && chunks.shape(2) == kb::kChunk,
            "run: chunks must be [N, " + std::to_string(m) + ", 128] float32");
    const py::ssize_t n = chunks.shape(0);
    float* mix_ptr = require_floats(mixes, {n, m, kb::kChunk}, "run: mixes");
    float* src_ptr = sources.is_none()
                         ? nullptr
                         : require_floats(sources, {n, s, m, kb::kChunk}, "run: sources");
    const float* in = chunks.data();
    py::gil_scoped_release release;
    const std::size_t per_chunk = static_cast<std::size_t>(m) * kb::kChunk;
    for (py::ssize_t i = 0; i < n; ++i)
      processor_->process(in + i * per_chunk, mix_ptr + i * per_chunk,
                          src_ptr ? src_ptr + i * s * per_chunk : nullptr);
  }

  py::dict stats() const {
    const kb::ProcessorStats st = processor_->stats();
    py::dict d;
    d["chunks"] = st.chunks;
    d["hints_used"] = st.hints_used;
    d["chunks_on_small"] = st.chunks_on_small;
    d["nonfinite_resets"] = st.nonfinite_resets;
    d["nonfinite_inputs"] = st.nonfinite_inputs;
    py::list by_age;
    for (uint64_t n : st.hints_by_age) by_age.append(n);
    d["hints_by_age"] = by_age;
    return d;
  }

  // The fallback's current mapping (order, gains), or None without a fallback.
  py::object fallback_mapping() {
    kb::Fallback* f = processor_->fallback();
    if (!f) return py::none();
    return aligner_mapping(f->aligner(), processor_->sources());
  }

  static py::tuple aligner_mapping(kb::OutputAligner& a, int sources) {
    int order[2];
    double gains[2];
    a.mapping(order, gains);
    py::list o, g;
    for (int i = 0; i < sources; ++i) {
      o.append(order[i]);
      g.append(gains[i]);
    }
    return py::make_tuple(py::tuple(o), py::array_t<double>(g));
  }

  kb::Processor& processor() { return *processor_; }

 private:
  std::unique_ptr<kb::Processor> processor_;
};

// A resampler design from kboost_rt.resampling: (taps [up, per_phase], up, down).
struct Taps {
  FloatArray taps;
  int up = 1, down = 1;
  int per_phase() const { return static_cast<int>(taps.shape(1)); }
};

Taps taps_from(const py::object& design) {
  Taps t;
  t.taps = FloatArray::ensure(design.attr("taps"));
  t.up = design.attr("up").cast<int>();
  t.down = design.attr("down").cast<int>();
  require(t.taps && t.taps.ndim() == 2 && t.taps.shape(0) == t.up,
          "resampler design: taps must be [up, per_phase] float32");
  return t;
}

std::unique_ptr<kb::RateAdapter> make_adapter(int channels, int rate, int frames,
                                              const Taps& d, const Taps& u) {
  return std::make_unique<kb::RateAdapter>(channels, rate, frames, d.up, d.down, d.taps.data(),
                                           d.per_phase(), u.up, u.down, u.taps.data(),
                                           u.per_phase());
}

// The rate adapter around an identity chunk: for tests of latency and response.
class PyRateAdapter {
 public:
  PyRateAdapter(int channels, int rate, int frames, const py::object& down, const py::object& up)
      : channels_(channels), frames_(frames) {
    adapter_ = make_adapter(channels, rate, frames, taps_from(down), taps_from(up));
  }
  // x [n, channels] at the device rate, n a multiple of frames -> y, same shape.
  FloatArray run_identity(const FloatArray& x) {
    require(x.ndim() == 2 && x.shape(1) == channels_ && x.shape(0) % frames_ == 0,
            "run_identity: x must be [n * frames, channels] float32");
    FloatArray y({x.shape(0), x.shape(1)});
    const float* in = x.data();
    float* out = y.mutable_data();
    auto identity = [](void* chunks, const float* input, float* mix) {
      std::memcpy(mix, input, sizeof(float) * kb::kChunk * *static_cast<int*>(chunks));
    };
    int channels = channels_;
    for (py::ssize_t i = 0; i < x.shape(0); i += frames_)
      adapter_->process(in + i * channels_, out + i * channels_, frames_, identity, &channels);
    return y;
  }
  int prefill() const { return adapter_->prefill(); }

 private:
  int channels_, frames_;
  std::unique_ptr<kb::RateAdapter> adapter_;
};

#ifdef KB_HAVE_PORTAUDIO
class PyAudioStream {
 public:
  PyAudioStream(PyProcessor& processor, int input_device, int output_device, int64_t record_chunks,
                int rate, int frames, const py::object& down, const py::object& up,
                int64_t probe_frame)
      : channels_(processor.processor().channels()) {
    kb::StreamOptions o;
    o.probe_frame = probe_frame;
    o.input_device = input_device;
    o.output_device = output_device;
    o.record_chunks = record_chunks;
    o.rate = rate;
    o.frames = frames;
    Taps d, u;
    if (!down.is_none()) {
      d = taps_from(down);
      u = taps_from(up);
      o.down = {d.up, d.down, d.per_phase(), d.taps.data()};
      o.up = {u.up, u.down, u.per_phase(), u.taps.data()};
    }
    stream_ = std::make_unique<kb::AudioStream>(processor.processor(), o);
  }

  py::dict stats() const {
    const kb::StreamStats s = stream_->stats();
    const kb::TimeHistogram& h = stream_->callback_time();
    py::dict d, times;
    d["callbacks"] = s.callbacks;
    d["xruns"] = s.xruns;
    d["wrong_sizes"] = s.wrong_sizes;
    d["realtime"] = s.realtime;
    d["underruns"] = s.underruns;
    d["prefill_frames"] = stream_->prefill();
    times["p50"] = h.quantile_ns(0.5) / 1e3;
    times["p99"] = h.quantile_ns(0.99) / 1e3;
    times["p999"] = h.quantile_ns(0.999) / 1e3;
    times["max"] = h.max_ns() / 1e3;
    d["callback_us"] = times;
    return d;
  }

  py::array_t<float> recording(bool output) const {
    const int64_t n = stream_->recorded();
    const float* src = output ? stream_->recorded_output() : stream_->recorded_input();
    py::array_t<float> out({static_cast<py::ssize_t>(channels_), static_cast<py::ssize_t>(n * kb::kChunk)});
    // Planar [channels][record_chunks * 128] with only the first n chunks filled.
    const int64_t stride = stream_->record_capacity() * kb::kChunk;
    for (int c = 0; c < channels_; ++c)
      std::copy(src + c * stride, src + c * stride + n * kb::kChunk,
                out.mutable_data() + c * n * kb::kChunk);
    return out;
  }

  py::dict latency_probe() const {
    const kb::LatencyProbe p = stream_->latency_probe();
    py::dict d;
    d["click_frame"] = p.click_frame;
    d["peak_frame"] = p.peak_frame;
    d["peak"] = p.peak;
    d["input_latency_s"] = p.input_latency_s;
    d["output_latency_s"] = p.output_latency_s;
    return d;
  }

  kb::AudioStream& stream() { return *stream_; }

 private:
  int channels_;
  std::unique_ptr<kb::AudioStream> stream_;
};
#endif

// The network side files hints 0..n-1 (each filled with its chunk number)
// while the audio side takes them, both as fast as they can in their own
// threads: counts the hints the audio side accepted that were not wholly
// its chunk's (torn copies).
py::dict stress_hint_link(int64_t n, int hint_channels, int delay, int slots) {
  kb::HintLink link(1, hint_channels, delay, 0, slots, 4);
  std::atomic<int64_t> written{-1}, reader_at{-1};
  std::atomic<bool> reader_done{false};
  int64_t torn = 0, checked = 0, needed = 0;
  {
    py::gil_scoped_release release;
    std::thread writer([&] {
      std::vector<float> hint(link.hint_size());
      for (int64_t seq = 0; seq < n; ++seq) {
        // Stay within a ring of the reader, so that the two interleave even
        // when one of them gets little CPU (a loaded machine).
        while (seq > reader_at.load() + slots && !reader_done.load()) std::this_thread::yield();
        std::fill(hint.begin(), hint.end(), static_cast<float>(seq));
        link.deliver(seq, hint.data());
        written.store(seq);
        // Then, after a varying pause, rewrite that slot with a later chunk's
        // hint, so that writes land while the reader copies it.
        for (volatile int64_t spin = 0; spin < (seq * 7919) % 2000; spin = spin + 1) {
        }
        std::fill(hint.begin(), hint.end(), static_cast<float>(seq + slots));
        link.deliver(seq + slots, hint.data());
      }
    });
    std::vector<float> got(link.hint_size());
    // The reader always asks for the freshest hint, the one being rewritten.
    for (int64_t t = delay; t < n + delay;) {
      const int64_t w = written.load();
      if (w + delay < t) {
        std::this_thread::yield();
        continue;
      }
      t = w + delay;
      ++needed;
      if (link.take(t, got.data())) {
        ++checked;
        for (float v : got)
          if (v != static_cast<float>(t - delay)) {
            ++torn;
            break;
          }
      }
      ++t;
      reader_at.store(t - delay);
    }
    reader_done.store(true);
    writer.join();
  }
  const kb::LinkCounters c = link.counters();
  py::dict d;
  d["torn"] = torn;
  d["checked"] = checked;
  d["needed"] = needed;
  d["on_time"] = c.on_time;
  d["lost"] = c.lost;
  d["late"] = c.late;
  return d;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "kboost-rt native core (hand-written C++, no LibTorch)";
  m.attr("SAMPLE_RATE") = kb::kSampleRate;
  m.attr("CHUNK") = kb::kChunk;
  m.attr("LOOKAHEAD") = kb::kLookahead;
  m.attr("WINDOW") = kb::kWindow;
  m.attr("N_BINS") = kb::kBins;

  m.def("stft", &stft, py::arg("signal"),
        "STFT of a [channels, samples] float32 signal -> [channels, frames, 97] complex64.\n"
        "Frame k covers samples 128k..128k+191 (zero-padded past the end).");
  m.def("istft", &istft, py::arg("spec"), py::arg("length") = -1,
        "Inverse STFT with overlap-add of [channels, frames, 97] -> [channels, length].");

  m.def("simd", [] { return std::string(kb::kernels().name); },
        "Name of the kernel set in use ('avx512', 'avx2' or 'generic').");
  m.def("kernel_sets", [] {
    py::list names;
    for (const char* n : kb::available_kernels()) names.append(n);
    return names;
  }, "Kernel sets this CPU can run, baseline first, best last.");
  m.def("peak_gflops", [](double seconds) {
    // Best of three timed runs, each about `seconds` long, of the kernel
    // set in use: the arithmetic rate no step can beat on this core.
    py::gil_scoped_release unlocked;
    using clock = std::chrono::steady_clock;
    double flops = 0.0, best = 0.0;
    long rounds = 1 << 14;
    volatile float sink = 0.f;
    for (;;) {  // calibrate: double until a run takes a tenth of `seconds`
      const auto t0 = clock::now();
      sink = sink + kb::kernels().fma_peak(rounds, &flops);
      const double s = std::chrono::duration<double>(clock::now() - t0).count();
      if (s > seconds / 10 || rounds > (1L << 40)) {
        rounds = static_cast<long>(rounds * seconds / std::max(s, 1e-9));
        break;
      }
      rounds *= 2;
    }
    for (int run = 0; run < 3; ++run) {
      const auto t0 = clock::now();
      sink = sink + kb::kernels().fma_peak(std::max(rounds, 1L), &flops);
      const double s = std::chrono::duration<double>(clock::now() - t0).count();
      best = std::max(best, flops / s / 1e9);
    }
    return best;
  }, py::arg("seconds") = 0.1,
        "Peak GFLOP/s of one core with the kernel set in use (independent multiply-adds).");
  m.def("select_kernels", [](const std::string& name) { return kb::select_kernels(name.c_str()); },
        py::arg("name"), "Use another kernel set (tests, benchmarks); False if unavailable.");

  py::class_<PyModel>(m, "Model",
                      "Packed weights of a model, read-only: any number of Engines on any\n"
                      "threads share one. Build it with kboost_rt.engine.NativeModel.")
      .def(py::init([](const py::dict& config, const py::dict& tensors) {
             return PyModel{build_model(config, tensors)};
           }),
           py::arg("config"), py::arg("tensors"))
      .def_property_readonly("weight_bytes", [](const PyModel& m) { return m.model->weight_bytes(); })
      .def_property_readonly("makes_hints", [](const PyModel& m) { return m.model->makes_hints(); })
      .def("__eq__", [](const PyModel& a, const PyModel& b) { return a.model == b.model; });

  py::class_<PyEngine>(m, "Engine",
                       "Native streaming step of a small, boosted or large model.\n"
                       "Build it with kboost_rt.engine.NativeEngine rather than directly.")
      .def(py::init<const py::dict&, const py::dict&>(), py::arg("config"), py::arg("tensors"))
      .def(py::init([](const PyModel& m) { return std::make_unique<PyEngine>(m.model); }),
           py::arg("model"), "A new stream of a shared model.")
      .def("process_aged_into", &PyEngine::process_aged_into, py::arg("chunk"),
           py::arg("hints"), py::arg("ages"), py::arg("out"))
      .def("process_into", &PyEngine::process_into, py::arg("chunk"), py::arg("hint"),
           py::arg("out"), py::arg("hint_out") = py::none(),
           "Run one step into preallocated arrays; releases the GIL.")
      .def("time_chunks", &PyEngine::time_chunks, py::arg("chunks"), py::arg("hints"),
           "Run N chunks back to back in C++; returns ns per step.")
      .def("time_stages", &PyEngine::time_stages, py::arg("chunks"), py::arg("hints"),
           "Run N chunks in C++ timing each stage inside the step; returns\n"
           "(stage names, block indices (-1: none), ns [N, stages]).")
      .def("reset", [](PyEngine& e) { e.engine().reset(); })
      .def_property_readonly("chunks", [](PyEngine& e) { return e.engine().stats().chunks; })
      .def_property_readonly("nonfinite_resets",
                             [](PyEngine& e) { return e.engine().stats().nonfinite_resets; })
      .def_property_readonly("makes_hints", [](PyEngine& e) { return e.engine().makes_hints(); })
      .def_property_readonly("state_bytes", [](PyEngine& e) { return e.engine().state_bytes(); })
      .def_property_readonly("model", [](PyEngine& e) { return PyModel{e.engine().model()}; });

  py::class_<kb::HintLink, std::shared_ptr<kb::HintLink>>(
      m, "HintLink",
      "The lock-free rings between the audio thread (send, take) and the network\n"
      "thread (next_chunk, deliver) of one hint stream.")
      .def(py::init<int, int, int, int>(), py::arg("channels"), py::arg("hint_channels"),
           py::arg("delay"), py::arg("max_age") = 0,
           "delay: a fixed-delay model's d; max_age: an any-delay model's (then delay 0).")
      .def("send", [](kb::HintLink& l, int64_t seq, const FloatArray& chunk) {
        require(chunk.size() == l.channels() * kb::kChunk, "send: chunk must be [channels, 128]");
        return l.send(seq, chunk.data());
      }, py::arg("seq"), py::arg("chunk"), "Audio side: queue input chunk `seq`.")
      .def("take", [](kb::HintLink& l, int64_t t, const py::object& out) {
        float* p = require_floats(out, {l.hint_channels(), kb::kBins}, "take: out");
        return l.take(t, p);
      }, py::arg("t"), py::arg("out"), "Audio side: the hint of chunk t - delay into `out`.")
      .def("take_fresh", [](kb::HintLink& l, int64_t t, const py::object& out) {
        require(l.max_age() > 0, "take_fresh: a link of an any-delay model (max_age > 0)");
        float* p = require_floats(out, {l.max_age(), l.hint_channels(), kb::kBins},
                                  "take_fresh: out");
        std::vector<int> ages(static_cast<std::size_t>(l.max_age()));
        const int n = l.take_fresh(t, p, ages.data());
        py::list taken;
        for (int i = 0; i < n; ++i) taken.append(ages[static_cast<std::size_t>(i)]);
        return taken;
      }, py::arg("t"), py::arg("out"), "Audio side, any-delay: every hint of chunks t - max_age "
      ".. t - 1 not taken before into out[:n]; returns their ages (n of them).")
      .def("next_chunk", [](kb::HintLink& l, const py::object& out) -> int64_t {
        float* p = require_floats(out, {l.channels(), kb::kChunk}, "next_chunk: out");
        int64_t seq = -1;
        return l.next_chunk(&seq, p) ? seq : -1;
      }, py::arg("out"), "Network side: the oldest queued chunk into `out`; its number or -1.")
      .def("deliver", [](kb::HintLink& l, int64_t seq, const FloatArray& hint) {
        require(hint.size() == l.hint_size(), "deliver: hint must be [hint_channels, 97]");
        return l.deliver(seq, hint.data());
      }, py::arg("seq"), py::arg("hint"), "Network side: file the hint of chunk `seq`; "
      "False if it came too late (counted).")
      .def_property_readonly("now", &kb::HintLink::now)
      .def_property_readonly("delay", &kb::HintLink::delay)
      .def_property_readonly("max_age", &kb::HintLink::max_age)
      .def_property_readonly("window", &kb::HintLink::window,
                             "The oldest a hint may be when taken (d, or max_age).")
      .def_property_readonly("channels", &kb::HintLink::channels)
      .def_property_readonly("hint_channels", &kb::HintLink::hint_channels)
      .def("counters", &link_counters);

  m.def("stress_hint_link", &stress_hint_link, py::arg("hints"), py::arg("hint_channels"),
        py::arg("delay"), py::arg("slots"),
        "Test: both sides of a HintLink at full speed in two threads; counts torn hints.");

  py::class_<PyProcessor>(m, "Processor",
                          "The real-time processor: engine, hint link, fallback, parameters.\n"
                          "Build it with kboost_rt.processor.Processor.")
      .def(py::init<const py::dict&, const py::dict&, std::shared_ptr<kb::HintLink>,
                    const py::object&, const py::object&, int, const py::dict&>(),
           py::arg("config"), py::arg("tensors"), py::arg("link"), py::arg("small_config"),
           py::arg("small_tensors"), py::arg("fallback_after"), py::arg("params"))
      .def("process", &PyProcessor::process, py::arg("chunk"), py::arg("mix"),
           py::arg("sources") = py::none(), "One chunk into preallocated arrays; releases the GIL.")
      .def("run", &PyProcessor::run, py::arg("chunks"), py::arg("mixes"),
           py::arg("sources") = py::none(), "N chunks back to back in C++.")
      .def("set_params", [](PyProcessor& p, const py::dict& d) {
        p.processor().set_params(params_from(d));
      }, py::arg("params"))
      .def("reset", [](PyProcessor& p) { p.processor().reset(); })
      .def_property_readonly("chunk", [](PyProcessor& p) { return p.processor().chunk(); })
      .def("fallback_mapping", &PyProcessor::fallback_mapping)
      .def("stats", &PyProcessor::stats);

  py::class_<kb::OutputAligner>(m, "OutputAligner",
                                "The fallback's least-squares map of one model's outputs onto "
                                "another's.")
      .def(py::init([](int sources, int channels) { return kb::OutputAligner(sources, channels); }),
           py::arg("sources"), py::arg("channels"))
      .def("reset", &kb::OutputAligner::reset)
      .def("update", [](kb::OutputAligner& a, const FloatArray& reference, const FloatArray& other) {
        require(reference.size() == a.samples() && other.size() == a.samples(),
                "update: two [sources, channels, 128] arrays");
        a.update(reference.data(), other.data());
      }, py::arg("reference"), py::arg("other"))
      .def("apply", [](kb::OutputAligner& a, const FloatArray& other) {
        require(other.ndim() == 3 && other.size() == a.samples(),
                "apply: other must be [sources, channels, 128]");
        FloatArray out({other.shape(0), other.shape(1), other.shape(2)});
        a.apply(other.data(), out.mutable_data());
        return out;
      }, py::arg("other"))
      .def("mapping", [](kb::OutputAligner& a, int sources) {
        return PyProcessor::aligner_mapping(a, sources);
      }, py::arg("sources"));

  py::class_<kb::Resampler>(m, "Resampler", "One streaming polyphase resampler (tests).")
      .def(py::init([](int channels, const py::object& design) {
        Taps t = taps_from(design);
        return kb::Resampler(t.up, t.down, channels, t.taps.data(), t.per_phase());
      }), py::arg("channels"), py::arg("design"))
      .def("process", [](kb::Resampler& r, const FloatArray& x) {
        require(x.ndim() == 2, "process: x must be [frames, channels] float32");
        const int n = static_cast<int>(x.shape(0));
        std::vector<float> out(static_cast<std::size_t>(r.max_output(n)) * x.shape(1));
        const int made = r.process(x.data(), n, out.data());
        FloatArray y({static_cast<py::ssize_t>(made), x.shape(1)});
        std::copy(out.begin(), out.begin() + made * x.shape(1), y.mutable_data());
        return y;
      }, py::arg("x"), "Interleaved frames in -> the frames they complete.");

  py::class_<PyRateAdapter>(m, "RateAdapter",
                            "The audio stream's resampling and re-chunking around an identity "
                            "chunk (tests).")
      .def(py::init<int, int, int, const py::object&, const py::object&>(), py::arg("channels"),
           py::arg("rate"), py::arg("frames"), py::arg("down"), py::arg("up"))
      .def("run_identity", &PyRateAdapter::run_identity, py::arg("x"))
      .def_property_readonly("prefill", &PyRateAdapter::prefill);

#ifdef KB_HAVE_PORTAUDIO
  m.attr("HAVE_AUDIO_STREAM") = true;
  py::class_<PyAudioStream>(m, "AudioStream",
                            "A duplex PortAudio stream at 16 kHz / 128 frames whose callback\n"
                            "runs the processor in C++ and nothing else.")
      .def(py::init<PyProcessor&, int, int, int64_t, int, int, const py::object&,
                    const py::object&, int64_t>(),
           py::arg("processor"), py::arg("input_device"), py::arg("output_device"),
           py::arg("record_chunks"), py::arg("rate") = 16000, py::arg("frames") = 128,
           py::arg("down") = py::none(), py::arg("up") = py::none(),
           py::arg("probe_frame") = -1, py::keep_alive<1, 2>())
      .def("latency_probe", &PyAudioStream::latency_probe,
           "The latency probe's click and output peak frames, and the device latencies "
           "PortAudio reports.")
      .def("start", [](PyAudioStream& s) { s.stream().start(); })
      .def("stop", [](PyAudioStream& s) {
        py::gil_scoped_release release;
        s.stream().stop();
      })
      .def_property_readonly("active", [](PyAudioStream& s) { return s.stream().active(); })
      .def("stats", &PyAudioStream::stats)
      .def("recording", &PyAudioStream::recording, py::arg("output"),
           "The recorded input (False) or output (True): [channels, chunks * 128].");
#else
  m.attr("HAVE_AUDIO_STREAM") = false;
#endif

  py::class_<kb::StftBank>(m, "StftStream", "Streaming STFT of one channel.")
      .def(py::init([] { return kb::StftBank(1); }))
      .def("reset", &kb::StftBank::reset)
      .def("process", [](kb::StftBank& self, const FloatArray& chunk) {
        require(chunk.ndim() == 1 && chunk.shape(0) == kb::kChunk,
                "StftStream.process: expected 128 samples");
        float bins[2 * kb::kPadded];
        self.process(chunk.data(), bins);
        ComplexArray out(kb::kBins);
        for (int f = 0; f < kb::kBins; ++f) out.mutable_data()[f] = {bins[f], bins[kb::kPadded + f]};
        return out;
      }, py::arg("chunk"), "128 new samples -> the 97 bins of the window ending with them.");

  py::class_<kb::IstftBank>(m, "IstftStream", "Streaming inverse STFT of one channel.")
      .def(py::init([] { return kb::IstftBank(1); }))
      .def("reset", &kb::IstftBank::reset)
      .def("process", [](kb::IstftBank& self, const ComplexArray& bins) {
        require(bins.ndim() == 1 && bins.shape(0) == kb::kBins,
                "IstftStream.process: expected 97 complex bins");
        float packed[2 * kb::kBins];
        for (int f = 0; f < kb::kBins; ++f) {
          packed[f] = bins.data()[f].real();
          packed[kb::kBins + f] = bins.data()[f].imag();
        }
        FloatArray out(kb::kChunk);
        self.process(packed, out.mutable_data());
        return out;
      }, py::arg("bins"), "97 complex bins -> the next 128 output samples.");
}
