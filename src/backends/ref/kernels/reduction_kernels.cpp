#include "backends/ref/kernel.hpp"

namespace kiln::ref {

void register_reduction_kernels(KernelRegistry& /*registry*/) {}

}  // namespace kiln::ref
