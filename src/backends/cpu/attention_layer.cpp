// The fused attention layer (attention_fusion.hpp): for every (batch·head,
// block of query rows) task, one thread computes the block's scores with
// dnnl_sgemm (Q_block · Kᵀ, the scales folded into its alpha), adds the
// mask, takes a numerically stable softmax in place, and multiplies by V
// with a second dnnl_sgemm straight into the output. The scores never exist
// beyond one block per thread (scratch that stays in cache), where the
// separate layers write and read back the whole [batch, heads, Sq, Sk] tensor
// three times.
//
// Q, Kᵀ and V are read through their strides (a Transpose or Slice view is no
// copy) when each matrix has a unit stride along one of its two dims, which
// is what dnnl_sgemm addresses; other layouts are reordered to plain first.
// Batch dims broadcast (size 1) read with stride 0; so does the mask on any
// dim. The scale factors and the mask are read at run time, so a refit that
// changes a scale weight is honoured.
//
// Threads: the tasks run on oneDNN's own OpenMP pool (openmp_pool.hpp).
// dnnl_sgemm called inside the parallel region runs on its caller's thread
// (oneDNN sees it is nested).
#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backends/cpu/attention_fusion.hpp"
#include "backends/cpu/float_vectors.hpp"
#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/openmp_pool.hpp"

namespace kiln::cpu {

using ir::k_no_value;
using ir::ValueId;

namespace {

// One matrix operand of dnnl_sgemm (row-major): a [rows, cols] view with
// row stride `rs` and column stride `cs`, given as itself ('N') or as the
// transpose of a [cols, rows] matrix ('T').
struct GemmOperand {
  char trans = 'N';
  int64_t ld = 0;
};

std::optional<GemmOperand> gemm_operand(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  if (cols == 1 || cs == 1) {
    const int64_t ld = rows == 1 ? std::max<int64_t>(cols, 1) : rs;
    if (ld >= std::max<int64_t>(cols, 1)) return GemmOperand{'N', ld};
  }
  if (rows == 1 || rs == 1) {
    const int64_t ld = cols == 1 ? std::max<int64_t>(rows, 1) : cs;
    if (ld >= std::max<int64_t>(rows, 1)) return GemmOperand{'T', ld};
  }
  return std::nullopt;
}

// Strides of `md`'s dims (a strided layout), its first element's offset and
// whether it is strided at all.
struct Strided {
  std::vector<int64_t> dims, strides;
  int64_t offset = 0;
};

Strided strided_of(const Md& md) {
  Strided s;
  const auto& d = md.data;
  for (int i = 0; i < d.ndims; ++i) {
    s.dims.push_back(d.dims[i]);
    s.strides.push_back(d.format_desc.blocking.strides[i]);
  }
  s.offset = d.offset0;
  return s;
}

// A slot holding `v` that dnnl_sgemm can address as a batch of matrices over
// its last two dims: its current layout when it is a strided f32 view with a
// unit stride along one of them, else a plain copy.
int gemm_slot(InstanceBuilder& b, ValueId v) {
  int s = b.use_strided(v, Dt::f32);
  const Md& md = b.slot(s).md;
  if (is_strided(md)) {
    const Strided st = strided_of(md);
    const size_t r = st.dims.size();
    if (r >= 2 && gemm_operand(st.dims[r - 2], st.dims[r - 1], st.strides[r - 2], st.strides[r - 1]))
      return s;
  }
  return b.use_plain(v, Dt::f32);
}

// Per output batch index (the dims before the last two, row-major), the
// element offset of an operand whose dims broadcast onto `batch` (leading
// dims missing or 1 read with stride 0).
std::vector<int64_t> batch_offsets(const std::vector<int64_t>& batch, const Strided& op) {
  const size_t nb = batch.size();
  const size_t lead = op.dims.size() >= 2 ? op.dims.size() - 2 : 0;
  std::vector<int64_t> stride(nb, 0);
  for (size_t i = 0; i < nb; ++i) {
    if (i + lead < nb) continue;  // a leading dim the operand does not have
    const size_t j = i + lead - nb;
    stride[i] = op.dims[j] == 1 ? 0 : op.strides[j];
  }
  int64_t count = 1;
  for (int64_t d : batch) count *= d;
  std::vector<int64_t> out(static_cast<size_t>(count), op.offset);
  for (int64_t flat = 0; flat < count; ++flat) {
    int64_t rest = flat, off = op.offset;
    for (size_t i = nb; i-- > 0;) {
      off += (rest % batch[i]) * stride[i];
      rest /= batch[i];
    }
    out[static_cast<size_t>(flat)] = off;
  }
  return out;
}

// exp(x) for x <= 0 (softmax after subtracting the row maximum): Cephes'
// range reduction and polynomial (relative error about 1e-7); 0 below -87,
// where 2^n would leave the normal range (such terms are below float
// precision next to the row's 1 anyway). Written over GCC vectors of 16
// floats, as branch-free selects, so every target_clones variant runs it in
// SIMD registers (-O2's vectoriser leaves the scalar form's selects alone).
// The helpers are always inlined into the clones (float_vectors.hpp).
using Vec = Floats16;
using IVec = int32_t __attribute__((vector_size(64)));
constexpr int k_lanes = 16;

[[gnu::always_inline]] inline Vec splat(float x) { return Vec{} + x; }

[[gnu::always_inline]] inline Vec exp_nonpositive(Vec x) {
  const Vec t = x * 1.44269504088896341f;
  // NaN compares false and takes -127 (no undefined conversion); `r` keeps
  // it, so the result is NaN.
  const Vec tc = t >= splat(-127.0f) ? t : splat(-127.0f);
  const IVec n = __builtin_convertvector(tc - 0.5f, IVec);
  const Vec fn = __builtin_convertvector(n, Vec);
  const Vec r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
  Vec p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const IVec bits = (n + 127) << 23;
  const Vec result = p * std::bit_cast<Vec>(bits);
  return x < splat(-87.0f) ? splat(0.0f) : result;
}

// The last n % 16 elements, padded: `fill` in the unused lanes.
[[gnu::always_inline]] inline Vec load_tail(const float* p, int64_t n, float fill) {
  Vec v = splat(fill);
  for (int64_t j = 0; j < n; ++j) v[j] = p[j];
  return v;
}
[[gnu::always_inline]] inline void store_tail(float* p, int64_t n, Vec v) {
  for (int64_t j = 0; j < n; ++j) p[j] = v[j];
}

// One row of scores: adds the mask (stride 0: one value for the row, or
// null), then replaces it by its softmax. A NaN, or an infinite maximum,
// makes some exp(x - max) NaN, hence the sum and the whole row: the
// reference's result.
[[gnu::target_clones("avx512f", "avx2", "default")]] void mask_softmax_row(float* s, int64_t n,
                                                                           const float* mask,
                                                                           int64_t mask_stride) {
  const int64_t whole = n / k_lanes * k_lanes;
  const int64_t tail = n - whole;
  Vec vmax = splat(-INFINITY);
  for (int64_t i = 0; i < n; i += k_lanes) {
    const int64_t count = std::min<int64_t>(k_lanes, n - i);
    Vec v = count == k_lanes ? load16(s + i) : load_tail(s + i, count, -INFINITY);
    if (mask) {
      const Vec m = mask_stride == 0
                        ? splat(*mask)
                        : (count == k_lanes ? load16(mask + i) : load_tail(mask + i, count, 0.0f));
      v += m;
      if (count == k_lanes) {
        store16(s + i, v);
      } else {
        store_tail(s + i, count, v);
      }
    }
    vmax = v > vmax ? v : vmax;
  }
  float max = -INFINITY;
  for (int j = 0; j < k_lanes; ++j) max = vmax[j] > max ? vmax[j] : max;
  for (int64_t k = 0; k < n; ++k) {
    if (std::isnan(s[k])) max = NAN;  // NaN is no maximum to compare with: the row becomes NaN
  }
  Vec vsum = splat(0.0f);
  const Vec vm = splat(max);
  for (int64_t i = 0; i < whole; i += k_lanes) {
    const Vec e = exp_nonpositive(load16(s + i) - vm);
    store16(s + i, e);
    vsum += e;
  }
  if (tail) {
    Vec e = exp_nonpositive(load_tail(s + whole, tail, -INFINITY) - vm);
    store_tail(s + whole, tail, e);
    for (int64_t j = tail; j < k_lanes; ++j) e[j] = 0.0f;
    vsum += e;
  }
  float sum = 0.0f;
  for (int j = 0; j < k_lanes; ++j) sum += vsum[j];
  const Vec inv = splat(1.0f / sum);
  for (int64_t i = 0; i < whole; i += k_lanes) store16(s + i, load16(s + i) * inv);
  for (int64_t k = whole; k < n; ++k) s[k] *= inv[0];
}

struct Problem {
  int64_t sq = 0, sk = 0, d = 0, dv = 0;
  int64_t rows = 0;  // query rows per task
  int64_t blocks = 0;
  GemmOperand q, k, v;
  int64_t q_rs = 0, k_rs = 0, v_rs = 0;                // row strides (Sq for Q; D for Kᵀ; Sk for V)
  int64_t mask_rs = 0, mask_cs = 0;                    // over Sq and Sk, 0 where broadcast
  std::vector<int64_t> q_off, k_off, v_off, mask_off;  // per batch index
  bool has_mask = false;
};

}  // namespace

void build_attention_layer(InstanceBuilder& b, LayerDesc& layer) {
  std::string why;
  const std::optional<AttentionMatch> found = match_attention_layer(b.graph(), layer.nodes, &why);
  if (!found) throw Error(ErrorCode::invalid_model, "attention layer: " + why);
  const AttentionMatch& m = *found;

  const std::vector<int64_t>& out_shape = b.shape(m.output);
  const size_t rank = out_shape.size();
  const std::vector<int64_t>& scores = b.shape(b.node(m.softmax).inputs[0]);
  if (scores.size() != rank || rank < 2) throw Error(ErrorCode::unsupported, "attention: scores rank");
  if (m.mask_add != ir::k_no_node && b.shape(b.node(m.mask_add).outputs[0]) != scores) {
    throw Error(ErrorCode::unsupported, "attention: the mask widens the scores");
  }

  const int q_slot = gemm_slot(b, m.q);
  const int k_slot = gemm_slot(b, m.k_t);
  const int v_slot = gemm_slot(b, m.v);
  const Strided q = strided_of(b.slot(q_slot).md);
  const Strided k = strided_of(b.slot(k_slot).md);
  const Strided v = strided_of(b.slot(v_slot).md);

  auto p = std::make_shared<Problem>();
  p->sq = q.dims[rank - 2];
  p->d = q.dims[rank - 1];
  p->sk = k.dims[rank - 1];
  p->dv = v.dims[rank - 1];
  if (k.dims[rank - 2] != p->d || v.dims[rank - 2] != p->sk || out_shape[rank - 2] != p->sq ||
      out_shape[rank - 1] != p->dv || scores[rank - 2] != p->sq || scores[rank - 1] != p->sk) {
    throw Error(ErrorCode::invalid_model, "attention: operand shapes do not chain");
  }
  p->q = *gemm_operand(p->sq, p->d, q.strides[rank - 2], q.strides[rank - 1]);
  p->k = *gemm_operand(p->d, p->sk, k.strides[rank - 2], k.strides[rank - 1]);
  p->v = *gemm_operand(p->sk, p->dv, v.strides[rank - 2], v.strides[rank - 1]);
  p->q_rs = q.strides[rank - 2];
  p->k_rs = k.strides[rank - 2];
  p->v_rs = v.strides[rank - 2];
  const std::vector<int64_t> batch(out_shape.begin(), out_shape.end() - 2);
  p->q_off = batch_offsets(batch, q);
  p->k_off = batch_offsets(batch, k);
  p->v_off = batch_offsets(batch, v);

  int mask_slot = -1;
  if (m.mask != k_no_value) {
    // Plain and broadcast by strides: [.., Sq or 1, Sk or 1].
    mask_slot = b.use_plain(m.mask, Dt::f32);
    Strided mk = strided_of(b.slot(mask_slot).md);
    const std::vector<int64_t>& ms = b.shape(m.mask);
    if (ms.size() < mk.dims.size()) {  // a scalar mask: oneDNN's {1}
      mk.dims.assign(1, 1);
      mk.strides.assign(1, 0);
    }
    while (mk.dims.size() < rank) {
      mk.dims.insert(mk.dims.begin(), 1);
      mk.strides.insert(mk.strides.begin(), 0);
    }
    p->mask_rs = mk.dims[rank - 2] == 1 ? 0 : mk.strides[rank - 2];
    p->mask_cs = mk.dims[rank - 1] == 1 ? 0 : mk.strides[rank - 1];
    p->mask_off = batch_offsets(batch, mk);
    p->has_mask = true;
  }
  std::vector<int> scale_slots;
  std::vector<bool> scale_divides;
  for (const ScaleFactor& f : m.scales) {
    scale_slots.push_back(b.use_plain(f.value, Dt::f32));
    scale_divides.push_back(f.divide);
  }
  const int out_slot = b.define(m.output, plain_md(out_shape, Dt::f32));

  // Query rows per task: a block of scores of about 64 KiB (it stays in L2
  // between the two products), at most 128 rows, fewer when that leaves
  // too few tasks to spread over the threads.
  const int64_t nb = static_cast<int64_t>(p->q_off.size());
  int64_t block = std::clamp<int64_t>(16384 / std::max<int64_t>(p->sk, 1), 8, 128);
  const int64_t threads = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  while (block > 8 && nb * ((p->sq + block - 1) / block) < 4 * threads) block /= 2;
  p->rows = std::max<int64_t>(1, std::min(block, p->sq));
  p->blocks = (p->sq + p->rows - 1) / p->rows;

  layer.tactic = Tactic(
      ConvAlgo::automatic, Layout::any, Prec::f32,
      std::string("attention:sgemm/f32/rows") + std::to_string(p->rows) + (p->has_mask ? "+mask" : ""), 0);

  Instance* inst = &b.instance();
  b.add_function(
      [inst, p, q_slot, k_slot, v_slot, mask_slot, out_slot, scale_slots, scale_divides](RunContext&) {
        auto data = [&](int s) {
          return static_cast<float*>(inst->slots[static_cast<size_t>(s)].mem.get_data_handle());
        };
        float alpha = 1.0f;
        for (size_t i = 0; i < scale_slots.size(); ++i) {
          const float c = *data(scale_slots[i]);
          alpha = scale_divides[i] ? alpha / c : alpha * c;
        }
        const float* qd = data(q_slot);
        const float* kd = data(k_slot);
        const float* vd = data(v_slot);
        const float* md = mask_slot >= 0 ? data(mask_slot) : nullptr;
        float* od = data(out_slot);
        const Problem& pr = *p;
        const size_t tasks = pr.q_off.size() * static_cast<size_t>(pr.blocks);
        std::atomic<int> status{dnnl_success};
        run_on_openmp_pool(tasks, [&](size_t t) {
          thread_local std::vector<float> scratch;
          const size_t bi = t / static_cast<size_t>(pr.blocks);
          const int64_t r0 = static_cast<int64_t>(t % static_cast<size_t>(pr.blocks)) * pr.rows;
          const int64_t rows = std::min(pr.rows, pr.sq - r0);
          const size_t need = static_cast<size_t>(rows * pr.sk);
          if (scratch.size() < need) scratch.resize(need);
          float* s = scratch.data();
          dnnl_status_t st =
              dnnl_sgemm(pr.q.trans, pr.k.trans, rows, pr.sk, pr.d, alpha, qd + pr.q_off[bi] + r0 * pr.q_rs,
                         pr.q.ld, kd + pr.k_off[bi], pr.k.ld, 0.0f, s, pr.sk);
          for (int64_t r = 0; r < rows && st == dnnl_success; ++r) {
            const float* mrow = pr.has_mask ? md + pr.mask_off[bi] + (r0 + r) * pr.mask_rs : nullptr;
            mask_softmax_row(s + r * pr.sk, pr.sk, mrow, pr.mask_cs);
          }
          if (st == dnnl_success) {
            st = dnnl_sgemm('N', pr.v.trans, rows, pr.dv, pr.sk, 1.0f, s, pr.sk, vd + pr.v_off[bi], pr.v.ld,
                            0.0f, od + static_cast<int64_t>(bi) * pr.sq * pr.dv + r0 * pr.dv, pr.dv);
          }
          if (st != dnnl_success) status = st;
        });
        if (status != dnnl_success) {
          throw Error(ErrorCode::internal,
                      "attention: dnnl_sgemm failed with status " + std::to_string(status.load()));
        }
      });
}

}  // namespace kiln::cpu
