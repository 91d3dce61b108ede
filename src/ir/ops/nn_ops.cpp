#include "ir/op_schema.hpp"

namespace kiln::ir {

void register_nn_ops(OpRegistry& /*registry*/) {}

}  // namespace kiln::ir
