// Fixed constants of the kboost-rt signal path (kboost_rt/signal_path.py says the same).
#pragma once

namespace kb {

constexpr int kSampleRate = 16000;
constexpr int kChunk = 128;                 // new samples per streaming step (8 ms)
constexpr int kLookahead = 64;              // extra samples each window sees (4 ms)
constexpr int kWindow = kChunk + kLookahead;  // 192-sample analysis window
constexpr int kBins = kWindow / 2 + 1;      // 97 one-sided frequency bins
constexpr int kMaxAge = 8;                  // the oldest hint a model may use, in chunks

}  // namespace kb
