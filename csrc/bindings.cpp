// Python bindings of the native core: a thin layer that checks shapes and
// converts arrays; all the work is in the plain C++ classes.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <complex>
#include <stdexcept>
#include <string>
#include <vector>

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
    kb::IstftStream synth;
    std::vector<float> re(kb::kBins), im(kb::kBins), chunk(kb::kChunk);
    for (py::ssize_t c = 0; c < channels; ++c) {
      synth.reset();
      for (py::ssize_t k = 0; k < frames; ++k) {
        for (int f = 0; f < kb::kBins; ++f) {
          re[f] = x[(c * frames + k) * kb::kBins + f].real();
          im[f] = x[(c * frames + k) * kb::kBins + f].imag();
        }
        synth.process(re.data(), im.data(), chunk.data());
        for (int n = 0; n < kb::kChunk; ++n) {
          const py::ssize_t i = k * kb::kChunk + n;
          if (i < length) y[c * length + i] = chunk[n];
        }
      }
    }
  }
  return out;
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

  py::class_<kb::StftStream>(m, "StftStream", "Streaming STFT of one channel.")
      .def(py::init<>())
      .def("reset", &kb::StftStream::reset)
      .def("process", [](kb::StftStream& self, const FloatArray& chunk) {
        require(chunk.ndim() == 1 && chunk.shape(0) == kb::kChunk,
                "StftStream.process: expected 128 samples");
        float re[kb::kBins], im[kb::kBins];
        self.process(chunk.data(), re, im);
        ComplexArray out(kb::kBins);
        for (int f = 0; f < kb::kBins; ++f) out.mutable_data()[f] = {re[f], im[f]};
        return out;
      }, py::arg("chunk"), "128 new samples -> the 97 bins of the window ending with them.");

  py::class_<kb::IstftStream>(m, "IstftStream", "Streaming inverse STFT of one channel.")
      .def(py::init<>())
      .def("reset", &kb::IstftStream::reset)
      .def("process", [](kb::IstftStream& self, const ComplexArray& bins) {
        require(bins.ndim() == 1 && bins.shape(0) == kb::kBins,
                "IstftStream.process: expected 97 complex bins");
        float re[kb::kBins], im[kb::kBins];
        for (int f = 0; f < kb::kBins; ++f) {
          re[f] = bins.data()[f].real();
          im[f] = bins.data()[f].imag();
        }
        FloatArray out(kb::kChunk);
        self.process(re, im, out.mutable_data());
        return out;
      }, py::arg("bins"), "97 complex bins -> the next 128 output samples.");
}
