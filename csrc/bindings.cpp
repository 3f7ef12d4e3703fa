// Python bindings of the native core: a thin layer that checks shapes and
// converts arrays; all the work is in the plain C++ classes.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <complex>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine.h"
#include "kernels.h"
#include "stft.h"

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ComplexArray = py::array_t<std::complex<float>, py::array::c_style | py::array::forcecast>;

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
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
float* writable_floats(const py::object& obj, const std::vector<py::ssize_t>& shape) {
  if (!py::isinstance<py::array>(obj)) return nullptr;
  auto a = obj.cast<py::array>();
  if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
      !a.writeable() || a.ndim() != static_cast<py::ssize_t>(shape.size()))
    return nullptr;
  for (std::size_t i = 0; i < shape.size(); ++i)
    if (a.shape(i) != shape[i]) return nullptr;
  return static_cast<float*>(a.mutable_data());
}

// Owns the engine; checks shapes, then runs the step without the GIL.
class PyEngine {
 public:
  PyEngine(const py::dict& config, const py::dict& tensors) {
    // Keep float32 C-contiguous copies alive only while the engine packs them.
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
    engine_ = std::make_unique<kb::Engine>(engine_config(config), map);
    const auto& c = engine_->config();
    hint_size_ = static_cast<py::ssize_t>(c.hint_channels) * kb::kBins;
  }

  // chunk [channels, 128]; hint [hint_channels, 97] or None; out [sources, channels, 128].
  void process_into(const FloatArray& chunk, const py::object& hint, const py::object& out_obj,
                    const py::object& hint_out) {
    const auto& c = engine_->config();
    require(chunk.ndim() == 2 && chunk.shape(0) == c.channels && chunk.shape(1) == kb::kChunk,
            "process: chunk must be [" + std::to_string(c.channels) + ", 128] float32");
    float* out_ptr = writable_floats(out_obj, {c.sources, c.channels, kb::kChunk});
    require(out_ptr != nullptr,
            "process: out must be a writeable C-contiguous float32 [sources, channels, 128] "
            "array");
    const float* hint_ptr = nullptr;
    FloatArray hint_arr;
    if (!hint.is_none()) {
      require(c.role == kb::Role::kBoosted, "process: only a boosted engine takes hints");
      hint_arr = FloatArray::ensure(hint);
      require(hint_arr && hint_arr.ndim() == 2 && hint_arr.shape(0) == c.hint_channels &&
                  hint_arr.shape(1) == kb::kBins,
              "process: hint must be [" + std::to_string(c.hint_channels) + ", 97]");
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

  // Runs chunks [N, channels, 128] (hints [N, hint_channels, 97] or None)
  // back to back in C++ and returns each step's wall time in nanoseconds:
  // the kernel's own cost, without the Python call around it.
  py::array_t<int64_t> time_chunks(const FloatArray& chunks, const py::object& hints) {
    const auto& c = engine_->config();
    require(chunks.ndim() == 3 && chunks.shape(1) == c.channels && chunks.shape(2) == kb::kChunk,
            "time_chunks: chunks must be [N, channels, 128]");
    const py::ssize_t n = chunks.shape(0);
    FloatArray hint_arr;
    if (!hints.is_none()) {
      hint_arr = FloatArray::ensure(hints);
      require(hint_arr && hint_arr.ndim() == 3 && hint_arr.shape(0) == n &&
                  hint_arr.size() == n * hint_size_,
              "time_chunks: hints must be [N, hint_channels, 97]");
    }
    py::array_t<int64_t> times(n);
    std::vector<float> out(static_cast<std::size_t>(c.sources) * c.channels * kb::kChunk);
    std::vector<float> hint_out(static_cast<std::size_t>(std::max<py::ssize_t>(hint_size_, 1)));
    int64_t* t = times.mutable_data();
    const float* in = chunks.data();
    const float* h = hints.is_none() ? nullptr : hint_arr.data();
    const bool make = engine_->makes_hints();
    py::gil_scoped_release release;
    for (py::ssize_t i = 0; i < n; ++i) {
      const auto start = std::chrono::steady_clock::now();
      engine_->process(in + i * c.channels * kb::kChunk, h ? h + i * hint_size_ : nullptr,
                       out.data(), make ? hint_out.data() : nullptr);
      t[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::steady_clock::now() - start).count();
    }
    return times;
  }

  kb::Engine& engine() { return *engine_; }

 private:
  std::unique_ptr<kb::Engine> engine_;
  py::ssize_t hint_size_ = 0;
};

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
  m.def("select_kernels", [](const std::string& name) { return kb::select_kernels(name.c_str()); },
        py::arg("name"), "Use another kernel set (tests, benchmarks); False if unavailable.");

  py::class_<PyEngine>(m, "Engine",
                       "Native streaming step of a small, boosted or large model.\n"
                       "Build it with kboost_rt.engine.NativeEngine rather than directly.")
      .def(py::init<const py::dict&, const py::dict&>(), py::arg("config"), py::arg("tensors"))
      .def("process_into", &PyEngine::process_into, py::arg("chunk"), py::arg("hint"),
           py::arg("out"), py::arg("hint_out") = py::none(),
           "Run one step into preallocated arrays; releases the GIL.")
      .def("time_chunks", &PyEngine::time_chunks, py::arg("chunks"), py::arg("hints"),
           "Run N chunks back to back in C++; returns ns per step.")
      .def("reset", [](PyEngine& e) { e.engine().reset(); })
      .def_property_readonly("chunks", [](PyEngine& e) { return e.engine().stats().chunks; })
      .def_property_readonly("nonfinite_resets",
                             [](PyEngine& e) { return e.engine().stats().nonfinite_resets; })
      .def_property_readonly("makes_hints", [](PyEngine& e) { return e.engine().makes_hints(); });

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
