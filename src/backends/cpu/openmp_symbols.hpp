// The OpenMP runtime's functions, looked up at run time: oneDNN runs on
// OpenMP here and libdnnl loads the runtime, so the cpu backend needs
// neither -fopenmp nor a direct link to it.
#pragma once

#include <dlfcn.h>

#include <cstring>

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

}  // namespace kiln::cpu
