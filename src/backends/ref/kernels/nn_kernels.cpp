#include "backends/ref/kernel.hpp"

namespace kiln::ref {

void register_nn_kernels(KernelRegistry& /*registry*/) {}

}  // namespace kiln::ref
