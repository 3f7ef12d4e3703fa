// Stage timing for `kboost-rt bench --breakdown`.
#pragma once

#include <chrono>
#include <cstdint>

namespace kb {

// Where one step's time goes, stage by stage, for `kboost-rt bench --breakdown`:
// timed inside the real step (caches as they are), not layer by layer apart.
// Engine::set_stage_times(nullptr), the default, leaves one branch per stage.
struct StageTimes {
  static constexpr int kMax = 64;
  int count = 0;            // stages of the last step
  const char* name[kMax] = {};
  int index[kMax] = {};     // block or merge number, -1 for none
  int64_t ns[kMax] = {};
};

class StageClock {
 public:
  explicit StageClock(StageTimes* times) : times_(times) {
    if (times_) {
      times_->count = 0;
      last_ = std::chrono::steady_clock::now();
    }
  }
  // The time since the previous lap is stage `name` (of block `index`).
  void lap(const char* name, int index = -1) {
    if (!times_ || times_->count >= StageTimes::kMax) return;
    const auto now = std::chrono::steady_clock::now();
    const int i = times_->count++;
    times_->name[i] = name;
    times_->index[i] = index;
    times_->ns[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count();
    last_ = now;
  }

 private:
  StageTimes* times_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace kb
