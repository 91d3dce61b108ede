// Store: the one interface of every engine store kiln composes (disk, RAM,
// Redis, and the composites: signing, tiers, an AOT artifact's engines).
//
// A user's EngineCache only stores bytes. kiln's stores also coordinate
// builds of one key, take bad entries out of service, say why a lookup
// missed, keep counters and show their entry headers to the miss explainer.
// Composites hold other stores as children(), so code that needs one kind of
// ability asks the tree (walk()) instead of downcasting. A user's cache joins
// the tree through adapt() — the one place where a cache is inspected for its
// type — and a Store is itself an EngineCache, so the public save()/load()
// work on every store and are written once, here.
//
// Thread-safety: every method may be called from several threads at once
// (all of kiln's stores allow it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "format/envelope.hpp"
#include "kiln/engine_cache.hpp"

namespace kiln::cache {

// Held while one process (or host) builds a key; releasing it lets waiters
// look again. Released by destruction.
class BuildLease {
 public:
  virtual ~BuildLease() = default;
};

// How a get() ended. Every value but `hit` is a miss, by reason.
enum class Status {
  hit,
  absent,                 // no entry
  corrupt,                // an entry that cannot serve (bad envelope, broken chunks)
  refused_unsigned,       // a signing store found an unsigned entry
  refused_bad_signature,  // a signing store found an entry signed otherwise, or tampered
  unavailable,            // the store could not be asked (Redis down, I/O error)
};
const char* status_name(Status status);

// The result of one get(): the blob on a hit, or why there is none. A
// composite records the result of each child it asked, in child order, in
// `asked`; record_outcome() hands the result back, so a store learns how its
// own lookup ended without remembering anything between the two calls.
struct Fetched {
  Status status = Status::absent;
  std::vector<std::byte> blob;  // on a hit (a composite moves it up; children keep none)
  std::string reason;           // on a miss: why, for the compile report
  std::vector<Fetched> asked;   // a composite's children's results, child i at index i

  bool hit() const { return status == Status::hit; }
  bool refused() const {
    return status == Status::refused_unsigned || status == Status::refused_bad_signature;
  }
  static Fetched found(std::vector<std::byte> blob) { return {Status::hit, std::move(blob), {}, {}}; }
  static Fetched miss(Status status, std::string reason = {}) { return {status, {}, std::move(reason), {}}; }
};

// Entry headers a store shows the miss explainer (unverified:
// format/header_peek.hpp).
struct EntryHeaders {
  size_t entries = 0;  // entries found (at most the maximum asked for), readable or not
  std::vector<format::EnvelopeHeader> headers;
};

struct TierReport {
  std::string name;
  std::optional<CacheStats> stats;  // the tier's own counters, when it keeps any
  uint64_t served = 0;              // lookups this tier answered (in this process)
  uint64_t backfilled = 0;          // entries copied into it from a lower tier
  uint64_t rejected = 0;            // entries it held that failed the envelope check
};

class Store : public EngineCache {
 public:
  // How a compile's lookup ended: `usable` is a hit that saved
  // `build_ms_saved`; the others are misses, by reason.
  enum class Outcome { usable, absent, corrupt, incompatible, refit_failed };

  // "disk /tmp/kiln_engine_cache", "ram", "redis://host:6379/0 (prefix kiln)".
  virtual std::string name() const = 0;

  // Looks `key` up without counting a hit or a miss: a compile looks a key up
  // up to twice (before and after waiting for another builder) and then
  // reports one outcome, so the counters count compiles, not reads.
  virtual Fetched get(const std::string& key) = 0;
  // Stores `blob` under `key`; never throws for I/O trouble.
  virtual void put(const std::string& key, std::span<const std::byte> blob) = 0;
  // Counts how the compile whose last lookup was `lookup` (from get()) ended.
  virtual void record_outcome(const std::string& key, const Fetched& lookup, Outcome outcome,
                              uint64_t build_ms_saved);
  // Deletes the entry; false when there was none or the store cannot.
  virtual bool remove(const std::string& key);

  // Blocks until the caller may build `key`: either nobody else is building
  // it, or the builder finished (the caller then gets again and usually
  // hits). Null when coordination is unavailable (degraded store, timeout, a
  // store without it): the caller builds without single flight, which costs
  // time, not correctness.
  virtual std::unique_ptr<BuildLease> lease(const std::string& key);
  // Takes a bad entry out of service so it is never served again. False when
  // there was no such entry.
  virtual bool quarantine(const std::string& key, const std::string& reason);
  // True when saves are being dropped (full or read-only store).
  virtual bool degraded() const;
  // A signing store above refused one of this store's entries; true when
  // this store counts that itself (a Redis store counts it fleet-wide).
  virtual bool count_refusal();

  // The store's own counters; nullopt when it keeps none or cannot say.
  virtual std::optional<CacheStats> counters();
  // Each tier's counters: one report for a plain store.
  virtual std::vector<TierReport> tier_stats();
  // Headers of up to `max_entries` of this store's own entries (not its
  // children's); nullopt when it has none to show or cannot be read.
  virtual std::optional<EntryHeaders> entry_headers(size_t max_entries);
  // The stores inside this one, in lookup order.
  virtual std::vector<std::shared_ptr<Store>> children() const;

  // The public EngineCache: save() puts; load() gets and counts the outcome.
  void save(const std::string& key, std::span<const std::byte> blob) final { put(key, blob); }
  std::optional<std::vector<std::byte>> load(const std::string& key) final;
};

// A store made of child stores (signing, tiers, artifact). Every ability
// goes to every child by default, written once here: put → all, lease → all
// (top first, released bottom first), quarantine → all, degraded when all
// are, and record_outcome → each child the lookup asked, with the outcome
// for the child that served and "absent" for those that missed.
class CompositeStore : public Store {
 public:
  explicit CompositeStore(std::vector<std::shared_ptr<Store>> children);

  void put(const std::string& key, std::span<const std::byte> blob) override;
  void record_outcome(const std::string& key, const Fetched& lookup, Outcome outcome,
                      uint64_t build_ms_saved) override;
  bool remove(const std::string& key) override;
  std::unique_ptr<BuildLease> lease(const std::string& key) override;
  bool quarantine(const std::string& key, const std::string& reason) override;
  bool degraded() const override;
  std::vector<std::shared_ptr<Store>> children() const override { return m_children; }

 protected:
  const std::vector<std::shared_ptr<Store>>& kids() const { return m_children; }

 private:
  std::vector<std::shared_ptr<Store>> m_children;
};

// Calls `fn` on `store`, then on every store inside it, depth first, in
// lookup order.
void walk(Store& store, const std::function<void(Store&)>& fn);

// `cache` as a Store: kiln's own stores as they are (so a disk cache passed
// as custom_engine_cache keeps its leases), a user's cache behind an adapter
// whose get() is its load() (a throw is "unavailable") and put() its save().
std::shared_ptr<Store> adapt(std::shared_ptr<EngineCache> cache, std::string name = "custom");

}  // namespace kiln::cache
