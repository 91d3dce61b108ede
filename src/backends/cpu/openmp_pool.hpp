// The OpenMP runtime oneDNN runs on, reached through functions looked up at
// run time: libdnnl loads the runtime, so the cpu backend needs neither
// -fopenmp nor a direct link to it.
//
// Work kiln runs itself inside an engine (its own kernels between oneDNN
// primitives) goes to this same pool: a second pool of threads would fight
// OpenMP's spinning workers for the same cores (measured: a per-channel
// multiply on std::threads took 5x longer than on the pool).
#pragma once

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "util/parallel_for.hpp"

namespace kiln::cpu {

// The loaded process's function `name` as a `Fn`, or nullptr when no
// OpenMP runtime is loaded.
template <typename Fn>
Fn openmp_symbol(const char* name) {
  void* sym = dlsym(RTLD_DEFAULT, name);
  Fn f = nullptr;
  static_assert(sizeof(sym) == sizeof(f));
  std::memcpy(&f, &sym, sizeof(f));
  return f;
}

using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

inline GompParallel gomp_parallel() {
  static const GompParallel fn = openmp_symbol<GompParallel>("GOMP_parallel");
  return fn;
}

using OmpQuery = int (*)();

// The threads a parallel region started now would have (oneDNN's current
// thread count); 1 without an OpenMP runtime.
inline int openmp_threads() {
  static const OmpQuery max_threads = openmp_symbol<OmpQuery>("omp_get_max_threads");
  return max_threads ? std::max(1, max_threads()) : 1;
}

// Runs task(i) for i in [0, n) on oneDNN's OpenMP threads (its current
// thread count, which the engine sets): thread t of T takes the t-th of T
// contiguous runs of tasks. Tasks over consecutive pieces of a tensor then
// give each thread the same part of it in every pass (the swish, the
// squeeze-and-excitation mean and scale), which stays in that core's cache
// from one pass to the next; handed out one task at a time, the parts went
// to whichever thread came first. Without libgomp the tasks run on
// util/parallel_for.hpp's threads. task must not throw: an exception cannot
// cross the OpenMP region.
template <typename Task>
void run_on_openmp_pool(size_t n, Task&& task) {
  GompParallel gomp = gomp_parallel();
  static const OmpQuery thread_num = openmp_symbol<OmpQuery>("omp_get_thread_num");
  static const OmpQuery num_threads = openmp_symbol<OmpQuery>("omp_get_num_threads");
  if (!gomp || !thread_num || !num_threads || n <= 1) {
    parallel_for(n, gomp ? 1 : 0, task);
    return;
  }
  struct Shared {
    size_t n = 0;
    std::remove_reference_t<Task>* task = nullptr;
  } shared;
  shared.n = n;
  shared.task = &task;
  gomp(
      [](void* data) {
        auto* sh = static_cast<Shared*>(data);
        const auto t = static_cast<size_t>(thread_num());
        const auto count = static_cast<size_t>(std::max(1, num_threads()));
        const size_t end = sh->n * (t + 1) / count;
        for (size_t i = sh->n * t / count; i < end; ++i) (*sh->task)(i);
      },
      &shared, 0, 0);
}

}  // namespace kiln::cpu
