#include "cache/store.hpp"

#include "util/log.hpp"

namespace kiln::cache {

const char* status_name(Status status) {
  switch (status) {
    case Status::hit:
      return "hit";
    case Status::absent:
      return "absent";
    case Status::corrupt:
      return "corrupt";
    case Status::refused_unsigned:
      return "refused (unsigned)";
    case Status::refused_bad_signature:
      return "refused (bad signature)";
    case Status::unavailable:
      return "unavailable";
  }
  return "unknown";
}

void Store::record_outcome(const std::string&, const Fetched&, Outcome, uint64_t) {}
bool Store::remove(const std::string&) { return false; }
std::unique_ptr<BuildLease> Store::lease(const std::string&) { return nullptr; }
bool Store::quarantine(const std::string&, const std::string&) { return false; }
bool Store::degraded() const { return false; }
bool Store::count_refusal() { return false; }
std::optional<CacheStats> Store::counters() { return std::nullopt; }
std::vector<TierReport> Store::tier_stats() { return {TierReport{name(), counters()}}; }
std::optional<EntryHeaders> Store::entry_headers(size_t) { return std::nullopt; }
std::vector<std::shared_ptr<Store>> Store::children() const { return {}; }

std::optional<std::vector<std::byte>> Store::load(const std::string& key) {
  Fetched fetched = get(key);
  record_outcome(key, fetched, fetched.hit() ? Outcome::usable : Outcome::absent, 0);
  if (!fetched.hit()) return std::nullopt;
  return std::move(fetched.blob);
}

namespace {

// Leases of several stores, released bottom store first.
class StackedLease final : public BuildLease {
 public:
  explicit StackedLease(std::vector<std::unique_ptr<BuildLease>> leases) : m_leases(std::move(leases)) {}
  ~StackedLease() override {
    while (!m_leases.empty()) m_leases.pop_back();
  }
  StackedLease(const StackedLease&) = delete;
  StackedLease& operator=(const StackedLease&) = delete;

 private:
  std::vector<std::unique_ptr<BuildLease>> m_leases;
};

// A user's EngineCache: bytes only.
class UserCacheStore final : public Store {
 public:
  UserCacheStore(std::shared_ptr<EngineCache> cache, std::string name)
      : m_cache(std::move(cache)), m_name(std::move(name)) {}

  std::string name() const override { return m_name; }
  Fetched get(const std::string& key) override {
    try {
      auto blob = m_cache->load(key);
      return blob ? Fetched::found(std::move(*blob)) : Fetched::miss(Status::absent);
    } catch (const std::exception& e) {
      // A user cache must not throw, but if it does, it is only a miss.
      log::warn_once("user-cache-load:" + m_name,
                     "engine cache " + m_name + ": load failed, treated as a miss: " + e.what());
      return Fetched::miss(Status::unavailable, std::string("load failed: ") + e.what());
    }
  }
  void put(const std::string& key, std::span<const std::byte> blob) override { m_cache->save(key, blob); }

 private:
  std::shared_ptr<EngineCache> m_cache;
  std::string m_name;
};

}  // namespace

CompositeStore::CompositeStore(std::vector<std::shared_ptr<Store>> children)
    : m_children(std::move(children)) {}

void CompositeStore::put(const std::string& key, std::span<const std::byte> blob) {
  for (const auto& child : m_children) {
    try {
      child->put(key, blob);
    } catch (const std::exception& e) {
      log::warn_once("store-put:" + child->name(),
                     "engine cache " + child->name() + ": save failed: " + e.what());
    }
  }
}

void CompositeStore::record_outcome(const std::string& key, const Fetched& lookup, Outcome outcome,
                                    uint64_t build_ms_saved) {
  for (size_t i = 0; i < lookup.asked.size() && i < m_children.size(); ++i) {
    const Fetched& asked = lookup.asked[i];
    if (asked.hit())
      m_children[i]->record_outcome(key, asked, outcome, build_ms_saved);
    else
      m_children[i]->record_outcome(key, asked, Outcome::absent, 0);
  }
}

bool CompositeStore::remove(const std::string& key) {
  bool any = false;
  for (const auto& child : m_children) any = child->remove(key) || any;
  return any;
}

std::unique_ptr<BuildLease> CompositeStore::lease(const std::string& key) {
  std::vector<std::unique_ptr<BuildLease>> leases;
  for (const auto& child : m_children) {
    if (auto lease = child->lease(key)) leases.push_back(std::move(lease));
  }
  if (leases.empty()) return nullptr;
  if (leases.size() == 1) return std::move(leases.front());
  return std::make_unique<StackedLease>(std::move(leases));
}

bool CompositeStore::quarantine(const std::string& key, const std::string& reason) {
  bool any = false;
  for (const auto& child : m_children) any = child->quarantine(key, reason) || any;
  return any;
}

bool CompositeStore::degraded() const {
  if (m_children.empty()) return false;
  for (const auto& child : m_children) {
    if (!child->degraded()) return false;
  }
  return true;
}

void walk(Store& store, const std::function<void(Store&)>& fn) {
  fn(store);
  for (const auto& child : store.children()) walk(*child, fn);
}

std::shared_ptr<Store> adapt(std::shared_ptr<EngineCache> cache, std::string name) {
  if (!cache) return nullptr;
  // The public boundary: a cache kiln made (make_disk_engine_cache(), a
  // store handed back as custom_engine_cache) is already a Store.
  if (auto store = std::dynamic_pointer_cast<Store>(cache)) return store;
  return std::make_shared<UserCacheStore>(std::move(cache), std::move(name));
}

}  // namespace kiln::cache
