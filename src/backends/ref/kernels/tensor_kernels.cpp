#include "backends/ref/kernel.hpp"

namespace kiln::ref {

void register_tensor_kernels(KernelRegistry& /*registry*/) {}

}  // namespace kiln::ref
