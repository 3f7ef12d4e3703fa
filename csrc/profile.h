#pragma once
#ifdef KB_PROFILE
#include <chrono>
namespace kb { extern double g_prof[16]; }
#define PROF_START auto _p0 = std::chrono::steady_clock::now();
#define PROF(i) { auto _p1 = std::chrono::steady_clock::now(); kb::g_prof[i] += std::chrono::duration<double>(_p1 - _p0).count(); _p0 = _p1; }
#else
#define PROF_START
#define PROF(i)
#endif
