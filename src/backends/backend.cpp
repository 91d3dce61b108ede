#include "backends/backend.hpp"

namespace kiln {

std::string Fingerprint::to_string() const {
  return backend + " plan v" + std::to_string(plan_version) + ", " + library_version + ", " + isa;
}

}  // namespace kiln
