// parallel_for: runs fn(i) for i in [0, n) on up to `threads` threads (the
// caller's included), handing out indices one at a time, so uneven items
// (weights of very different sizes) balance. Used where work is independent
// and large (refit evaluates and reorders every weight), not in hot kernels,
// which oneDNN threads itself.
//
// fn must be safe to call concurrently for distinct i. The first exception
// thrown by any call is rethrown on the caller's thread after every thread
// has stopped; remaining items are skipped once one has failed.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

template <typename Fn>
void parallel_for(size_t n, int threads, Fn&& fn) {
  const size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t workers = std::min(n, threads > 0 ? static_cast<size_t>(threads) : hw);
  if (workers <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (size_t i = next++; i < n && !failed.load(); i = next++) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::jthread> pool;
  pool.reserve(workers - 1);
  for (size_t t = 1; t < workers; ++t) pool.emplace_back(work);
  work();
  pool.clear();  // joins
  if (error) std::rethrow_exception(error);
}

}  // namespace kiln
