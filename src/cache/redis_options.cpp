#include "cache/redis_options.hpp"

#include <charconv>
#include <map>

#include "cache/entry_limits.hpp"
#include "kiln/error.hpp"
#include "util/byte_size.hpp"

namespace kiln::cache {

namespace {

constexpr uint64_t k_redis_max_bulk = uint64_t{512} << 20;  // proto-max-bulk-len default

// "redis://:secret@host" with the password replaced, for error messages.
std::string masked(const std::string& uri) {
  auto scheme = uri.find("://");
  auto at = uri.find('@');
  if (scheme == std::string::npos || at == std::string::npos || at < scheme) return uri;
  auto colon = uri.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return uri;
  return uri.substr(0, colon + 1) + "***" + uri.substr(at);
}

[[noreturn]] void bad(const std::string& uri, const std::string& what) {
  throw Error(ErrorCode::invalid_argument, "engine cache URI '" + masked(uri) + "': " + what);
}

uint64_t parse_uint(const std::string& uri, const std::string& name, const std::string& text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    bad(uri, name + "='" + text + "' is not a non-negative integer");
  }
  return value;
}

// "8M", "65536", "1G" (powers of 1024).
uint64_t parse_bytes(const std::string& uri, const std::string& name, const std::string& text) {
  auto size = parse_byte_size(text);
  if (!size.ok()) bad(uri, name + ": " + size.error);
  return size.bytes;
}

bool parse_bool(const std::string& uri, const std::string& name, const std::string& text) {
  if (text == "1" || text == "true" || text == "yes") return true;
  if (text == "0" || text == "false" || text == "no") return false;
  bad(uri, name + "='" + text + "' is not 0 or 1");
}

std::string percent_decode(const std::string& uri, const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) bad(uri, "a '%' escape is cut short");
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
    if (ec != std::errc() || end != text.data() + i + 3) bad(uri, "bad '%' escape");
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

void apply_query(const std::string& uri, const std::string& query, RedisOptions& o) {
  size_t start = 0;
  while (start <= query.size()) {
    size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    std::string item = query.substr(start, end - start);
    start = end + 1;
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos) bad(uri, "parameter '" + item + "' has no value");
    std::string name = item.substr(0, eq);
    std::string value = percent_decode(uri, item.substr(eq + 1));
    using std::chrono::milliseconds;
    if (name == "prefix") {
      if (value.empty()) bad(uri, "prefix is empty");
      o.prefix = value;
    } else if (name == "password") {  // for unix sockets, which have no user:password@ part
      o.password = value;
    } else if (name == "user") {
      o.user = value;
    } else if (name == "ttl") {
      o.ttl = std::chrono::seconds(parse_uint(uri, name, value));
    } else if (name == "readonly" || name == "read_only") {
      o.read_only = parse_bool(uri, name, value);
    } else if (name == "db") {
      o.db = static_cast<int>(parse_uint(uri, name, value));
    } else if (name == "connect_timeout_ms") {
      o.connect_timeout = milliseconds(parse_uint(uri, name, value));
    } else if (name == "timeout_ms") {
      o.command_timeout = milliseconds(parse_uint(uri, name, value));
    } else if (name == "chunk_size") {
      o.chunk_bytes = parse_bytes(uri, name, value);
    } else if (name == "max_entry_size") {
      o.max_entry_bytes = parse_bytes(uri, name, value);
    } else if (name == "lease_ms") {
      o.lease = milliseconds(parse_uint(uri, name, value));
    } else if (name == "lease_wait_ms") {
      o.lease_wait = milliseconds(parse_uint(uri, name, value));
    } else if (name == "retry_ms") {
      o.retry = milliseconds(parse_uint(uri, name, value));
    } else {
      bad(uri, "unknown parameter '" + name +
                   "' (prefix, ttl, readonly, db, user, password, connect_timeout_ms, timeout_ms, "
                   "chunk_size, max_entry_size, "
                   "lease_ms, lease_wait_ms, retry_ms)");
    }
  }
}

}  // namespace

std::string RedisOptions::describe() const {
  std::string where =
      unix_path.empty() ? "redis://" + host + ":" + std::to_string(port) : "unix://" + unix_path;
  return where + "/" + std::to_string(db) + " (prefix " + prefix + (read_only ? ", read-only" : "") + ")";
}

bool is_redis_uri(const std::string& text) {
  return text.starts_with("redis://") || text.starts_with("unix://");
}

RedisOptions parse_redis_uri(const std::string& uri) {
  RedisOptions o;
  std::string rest;
  bool unix_socket = false;
  if (uri.starts_with("redis://")) {
    rest = uri.substr(8);
  } else if (uri.starts_with("unix://")) {
    rest = uri.substr(7);
    unix_socket = true;
  } else {
    bad(uri, "expected redis://host:port/db or unix:///path/to/socket");
  }
  std::string query;
  if (auto q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (unix_socket) {
    if (rest.empty() || rest.front() != '/')
      bad(uri, "a unix socket needs an absolute path: unix:///run/redis.sock");
    o.unix_path = percent_decode(uri, rest);
  } else {
    // [[user]:password@]host[:port][/db]
    if (auto at = rest.rfind('@'); at != std::string::npos) {
      std::string auth = rest.substr(0, at);
      rest = rest.substr(at + 1);
      auto colon = auth.find(':');
      if (colon == std::string::npos) {
        o.password = percent_decode(uri, auth);  // redis://password@host, as redis-cli -u reads it
      } else {
        o.user = percent_decode(uri, auth.substr(0, colon));
        o.password = percent_decode(uri, auth.substr(colon + 1));
      }
    }
    std::string hostport = rest;
    if (auto slash = rest.find('/'); slash != std::string::npos) {
      hostport = rest.substr(0, slash);
      std::string db = rest.substr(slash + 1);
      if (!db.empty()) o.db = static_cast<int>(parse_uint(uri, "db", db));
    }
    if (hostport.starts_with('[')) {  // [::1]:6379
      auto close = hostport.find(']');
      if (close == std::string::npos) bad(uri, "unclosed '[' in the host");
      o.host = hostport.substr(1, close - 1);
      hostport = hostport.substr(close + 1);
      if (!hostport.empty() && hostport.front() != ':') bad(uri, "junk after the host");
      if (!hostport.empty()) o.port = static_cast<int>(parse_uint(uri, "port", hostport.substr(1)));
    } else if (auto colon = hostport.rfind(':'); colon != std::string::npos) {
      o.host = hostport.substr(0, colon);
      o.port = static_cast<int>(parse_uint(uri, "port", hostport.substr(colon + 1)));
    } else {
      o.host = hostport;
    }
    if (o.host.empty()) bad(uri, "no host");
    if (o.port <= 0 || o.port > 65535) bad(uri, "port " + std::to_string(o.port) + " is out of range");
  }
  apply_query(uri, query, o);
  if (o.chunk_bytes == 0 || o.chunk_bytes > k_redis_max_bulk) {
    bad(uri, "chunk_size must be 1 byte to 512M (Redis's largest value)");
  }
  if (o.max_entry_bytes == 0 || o.max_entry_bytes > k_max_entry_bytes) {
    bad(uri, "max_entry_size must be 1 byte to 1G (the largest entry any kiln cache reads)");
  }
  if (o.lease.count() < 10) bad(uri, "lease_ms must be at least 10");
  if (o.command_timeout.count() == 0 || o.connect_timeout.count() == 0) bad(uri, "timeouts must be positive");
  if (o.db < 0) bad(uri, "db must be 0 or more");
  return o;
}

}  // namespace kiln::cache
