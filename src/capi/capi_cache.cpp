// A user engine cache given as C callbacks (kiln_cache_callbacks), adapted
// to kiln::EngineCache. No C++ type or exception crosses the callbacks.
#include <cstring>

#include "capi/capi_internal.hpp"
#include "kiln/engine_cache.hpp"
#include "util/log.hpp"

struct kiln_cache_result {
  std::optional<std::vector<std::byte>> bytes;
  bool used = false;
};

namespace kiln::capi {
namespace {

class CallbackEngineCache final : public EngineCache {
 public:
  explicit CallbackEngineCache(const kiln_cache_callbacks& callbacks) : m_callbacks(callbacks) {}
  ~CallbackEngineCache() override {
    if (m_callbacks.destroy) m_callbacks.destroy(m_callbacks.user);
  }
  CallbackEngineCache(const CallbackEngineCache&) = delete;
  CallbackEngineCache& operator=(const CallbackEngineCache&) = delete;

  void save(const std::string& key, std::span<const std::byte> blob) override {
    if (!m_callbacks.save) return;
    if (m_callbacks.save(m_callbacks.user, key.c_str(), blob.data(), blob.size()) != 0) {
      log::warn("user engine cache: save of " + key + " failed; the engine is not cached");
    }
  }

  std::optional<std::vector<std::byte>> load(const std::string& key) override {
    if (!m_callbacks.load) return std::nullopt;
    kiln_cache_result result;
    int found = m_callbacks.load(m_callbacks.user, key.c_str(), &result);
    if (found < 0) {
      log::warn("user engine cache: load of " + key + " failed; treated as a miss");
      return std::nullopt;
    }
    if (found == 0) return std::nullopt;
    if (!result.bytes) {
      log::warn("user engine cache: load of " + key + " reported a hit without bytes; treated as a miss");
      return std::nullopt;
    }
    return std::move(result.bytes);
  }

 private:
  kiln_cache_callbacks m_callbacks;
};

}  // namespace
}  // namespace kiln::capi

using namespace kiln;
using namespace kiln::capi;

extern "C" {

void* kiln_cache_result_alloc(kiln_cache_result* result, size_t size) {
  if (result == nullptr || result->used) return nullptr;
  try {
    result->bytes.emplace(size);
    result->used = true;
    // A zero-size blob still needs a pointer the callback may hold.
    return size == 0 ? static_cast<void*>(result) : static_cast<void*>(result->bytes->data());
  } catch (...) {
    result->bytes.reset();
    return nullptr;
  }
}

kiln_status kiln_cache_result_set(kiln_cache_result* result, const void* data, size_t size,
                                  void (*release)(void* release_context), void* release_context) {
  kiln_status status = guard([&] {
    require(result, "result");
    if (size > 0) require(data, "data");
    if (result->used) throw Error(ErrorCode::invalid_argument, "kiln_cache_result already holds a blob");
    const auto* begin = static_cast<const std::byte*>(data);
    result->bytes.emplace(begin, begin + size);
    result->used = true;
  });
  if (release) release(release_context);
  return status;
}

kiln_status kiln_settings_set_cache(kiln_settings* settings, const kiln_cache_callbacks* callbacks) {
  return guard([&] {
    require(settings, "settings");
    if (callbacks == nullptr) {
      settings->settings.custom_engine_cache.reset();
      return;
    }
    if (callbacks->struct_size < sizeof(kiln_cache_callbacks)) {
      throw Error(ErrorCode::invalid_argument,
                  "kiln_cache_callbacks.struct_size is " + std::to_string(callbacks->struct_size) +
                      ", expected at least " + std::to_string(sizeof(kiln_cache_callbacks)));
    }
    if (callbacks->save == nullptr || callbacks->load == nullptr) {
      throw Error(ErrorCode::invalid_argument, "kiln_cache_callbacks: save and load are required");
    }
    settings->settings.custom_engine_cache = std::make_shared<CallbackEngineCache>(*callbacks);
  });
}

}  // extern "C"
