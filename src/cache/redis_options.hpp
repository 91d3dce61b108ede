// Where a Redis engine cache lives and how it behaves, parsed from one URI so
// that a setting, a CLI flag and an environment variable all say the same
// thing:
//
//   redis://[[user]:password@]host[:port][/db][?param=value&...]
//   unix:///path/to/redis.sock[?db=N&param=value&...]
//
// Parameters (all optional):
//   prefix=kiln            namespace of every key (teams, kiln versions)
//   ttl=0                  seconds an entry lives after its last save or hit;
//                          0: until Redis evicts it (maxmemory policy)
//   readonly=0             1: never write (no saves, leases, counters)
//   connect_timeout_ms=500 per connection attempt
//   timeout_ms=2000        per command (socket read/write)
//   chunk_size=8M          blobs are stored in chunks of this size
//   max_entry_size=1G      larger blobs are refused, counted, not stored
//   lease_ms=30000         build lease lifetime; renewed every third of it
//   lease_wait_ms=600000   how long a host waits for another's build
//   retry_ms=1000          after a failure, how long before trying again
//   user=, password=       for unix:// (redis:// takes user:password@host)
//
// A password in the URI is visible in the process list when the URI is a
// command-line argument; put the URI in KILN_ENGINE_CACHE (or a setting) for
// production use.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kiln::cache {

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_path;  // non-empty: connect through this socket
  int db = 0;
  std::string user;  // Redis 6 ACL user; empty: the default user
  std::string password;
  std::string prefix = "kiln";
  std::chrono::seconds ttl{0};
  bool read_only = false;
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds command_timeout{2000};
  uint64_t chunk_bytes = uint64_t{8} << 20;
  uint64_t max_entry_bytes = uint64_t{1} << 30;
  std::chrono::milliseconds lease{30'000};
  std::chrono::milliseconds lease_wait{600'000};
  std::chrono::milliseconds retry{1000};

  // "redis://host:port/db (prefix kiln)": for messages; never the password.
  std::string describe() const;
};

// True when `text` names a Redis cache (redis:// or unix://).
bool is_redis_uri(const std::string& text);

// Throws kiln::Error(invalid_argument) naming the URI (password masked) and
// the bad part.
RedisOptions parse_redis_uri(const std::string& uri);

}  // namespace kiln::cache
