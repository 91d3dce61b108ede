// cache_stress: one process that works a DiskEngineCache folder as hard as it
// can, for the crash and concurrency tests, which start many of these, kill
// them with SIGKILL at random points and check what they leave behind.
//
//   cache_stress --dir D --role churn|writer|reader|evictor [--seed N] [--keys N]
//                [--cap BYTES] [--min-size BYTES] [--max-size BYTES]
//                [--seconds S] [--iterations N]
//
// Roles: `writer` saves (half of the saves under the key's build lock, as a
// compile does), `reader` loads, `evictor` prunes to varying caps and
// verifies entries, `churn` does all of it at random. Every load that hits is
// checked byte for byte (stress_blob.hpp): a torn, mixed or misplaced entry
// makes the process print "BAD ..." and exit 1. At the end it prints one line
// "ok role=... saves=... hits=... misses=... prunes=..." and exits 0.
//
// It runs no oneDNN and starts no threads, and it is exec'd, never forked
// from a test process.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <thread>

#include "cache/disk_engine_cache.hpp"
#include "stress_blob.hpp"
#include "util/log.hpp"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string dir;
  std::string role = "churn";
  uint64_t seed = 1;
  uint64_t keys = 24;
  uint64_t cap = 16ull << 20;
  size_t min_size = 32 << 10;
  size_t max_size = 1 << 20;
  double seconds = 0;  // 0: until `iterations`
  uint64_t iterations = 1ull << 40;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "cache_stress: %s\n", why.c_str());
  std::exit(64);
}

uint64_t number(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) usage("not a number: " + std::string(text));
  return value;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (i + 1 >= argc) usage("missing value for " + std::string(flag));
    std::string_view value = argv[++i];
    if (flag == "--dir")
      o.dir = value;
    else if (flag == "--role")
      o.role = value;
    else if (flag == "--seed")
      o.seed = number(value);
    else if (flag == "--keys")
      o.keys = number(value);
    else if (flag == "--cap")
      o.cap = number(value);
    else if (flag == "--min-size")
      o.min_size = number(value);
    else if (flag == "--max-size")
      o.max_size = number(value);
    else if (flag == "--seconds")
      o.seconds = static_cast<double>(number(value));
    else if (flag == "--iterations")
      o.iterations = number(value);
    else
      usage("unknown flag " + std::string(flag));
  }
  if (o.dir.empty()) usage("--dir is required");
  if (o.role != "churn" && o.role != "writer" && o.role != "reader" && o.role != "evictor")
    usage("bad --role");
  if (o.keys == 0 || o.min_size > o.max_size) usage("bad --keys or sizes");
  return o;
}

struct Counts {
  uint64_t saves = 0, hits = 0, misses = 0, prunes = 0, verified = 0;
};

class Worker {
 public:
  explicit Worker(const Options& o) : m_o(o), m_rng(o.seed), m_cache(o.dir, o.cap) {}

  void save() {
    uint64_t id = m_rng() % m_o.keys;
    std::uniform_int_distribution<size_t> size(m_o.min_size, m_o.max_size);
    // The generation names this process and save, so two writers' blobs for
    // one key differ and a mixed entry cannot pass the check.
    uint64_t generation = (m_o.seed << 32) | m_counts.saves;
    auto blob = reliability::stress_blob(id, generation, size(m_rng));
    auto hex = reliability::stress_key(id).hex();
    if (m_rng() % 2 == 0) {
      // A compile's single flight: lock, look again, build, publish.
      auto lock = m_cache.acquire_build_lock(hex, std::chrono::seconds(30));
      if (!m_cache.load(hex)) m_cache.save(hex, blob);
    } else {
      m_cache.save(hex, blob);
    }
    ++m_counts.saves;
  }

  void load() {
    uint64_t id = m_rng() % m_o.keys;
    auto blob = m_cache.load(reliability::stress_key(id).hex());
    if (!blob) {
      ++m_counts.misses;
      return;
    }
    ++m_counts.hits;
    if (auto why = reliability::check_stress_blob(id, *blob); !why.empty()) {
      std::fprintf(stderr, "BAD entry %llu (%zu bytes): %s\n", static_cast<unsigned long long>(id),
                   blob->size(), why.c_str());
      std::fflush(stderr);
      std::_Exit(1);
    }
  }

  void evict() {
    // Caps between a quarter of the cap and all of it: entries come and go
    // under the readers' feet.
    m_cache.prune(m_o.cap / 4 + m_rng() % (m_o.cap - m_o.cap / 4 + 1));
    ++m_counts.prunes;
    if (m_rng() % 4 == 0) {
      uint64_t id = m_rng() % m_o.keys;
      auto result = m_cache.verify_entry(reliability::stress_key(id).hex());
      if (result && !result->ok) {
        std::fprintf(stderr, "BAD entry %llu failed verify: %s\n", static_cast<unsigned long long>(id),
                     result->reason.c_str());
        std::_Exit(1);
      }
      ++m_counts.verified;
    }
  }

  void step() {
    if (m_o.role == "writer") return save();
    if (m_o.role == "reader") return load();
    if (m_o.role == "evictor") return evict();
    unsigned dice = m_rng() % 20;
    if (dice < 9) return save();
    if (dice < 18) return load();
    return evict();
  }

  const Counts& counts() const { return m_counts; }

 private:
  const Options& m_o;
  std::mt19937_64 m_rng;
  kiln::cache::DiskEngineCache m_cache;
  Counts m_counts;
};

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  // The cache warns about what a killed neighbour leaves behind; that is the
  // point of the test, not news.
  kiln::log::set_level(kiln::log::Level::error);
  Worker worker(o);
  auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  for (uint64_t i = 0; i < o.iterations; ++i) {
    if (o.seconds > 0 && Clock::now() >= deadline) break;
    worker.step();
  }
  const auto& c = worker.counts();
  std::printf("ok role=%s saves=%llu hits=%llu misses=%llu prunes=%llu verified=%llu\n", o.role.c_str(),
              static_cast<unsigned long long>(c.saves), static_cast<unsigned long long>(c.hits),
              static_cast<unsigned long long>(c.misses), static_cast<unsigned long long>(c.prunes),
              static_cast<unsigned long long>(c.verified));
  return 0;
}
