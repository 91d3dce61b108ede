// Numpy-broadcast Add/Sub/Mul/Div of two dense row-major float tensors:
// the shape canonicalisation the binary layer hands to oneDNN, and kiln's
// own threaded loop for the broadcasts oneDNN 2.6 has no jit kernel for
// (oneDNN's reference binary kernel is an order of magnitude slower).
//
// Canonical form: dims of size 1 in the output are dropped, and adjacent
// dims that broadcast the same way on both operands are merged, so
// [1,64,3,49,49] + [1,64,1,49,49] is [64,3,2401] + [64,1,2401]. The two
// forms describe the same bytes.
//
// Stateless; the kernel is safe to call concurrently on distinct outputs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kiln::cpu {

enum class BinaryOp : uint8_t { add, sub, mul, div };

struct BroadcastShape {
  std::vector<int64_t> out;  // canonical output dims (at least one)
  std::vector<int64_t> a;    // the first operand's dims in that rank: out's, or 1 where it broadcasts
  std::vector<int64_t> b;
  int64_t numel() const;
  // Whether an operand is the full output (no broadcast dim).
  bool a_full() const { return a == out; }
  bool b_full() const { return b == out; }
};

// `a` and `b` are aligned to the right against `out` (numpy rules); a dim
// of either is 1 or out's. Throws kiln::Error(invalid_model) otherwise.
BroadcastShape canonical_broadcast(std::span<const int64_t> out, std::span<const int64_t> a,
                                   std::span<const int64_t> b);

// Whether `shape` is [G, P, L] (op) [G, 1, L] or the other way round (G may
// be absent): rows of one operand against one row of the other per group,
// as a per-channel scale or bias over a channels-last or channel-blocked
// tensor. The kernel runs these at memory speed, any row length.
bool repeats_rows(const BroadcastShape& shape);

// y = a (op) b over `shape`. `y` may be `a` or `b` itself when that operand
// is full (each element is read before it is written); no other overlap.
// Runs on oneDNN's OpenMP pool at its thread count (threads 0: inside an
// engine), or on `threads` threads of its own.
void broadcast_binary(BinaryOp op, const BroadcastShape& shape, const float* a, const float* b, float* y,
                      int threads = 0);

}  // namespace kiln::cpu
