#include "backends/cuda/tactic_signature.hpp"

#include "backends/cuda/precision.hpp"

namespace kiln::cuda {

namespace {

template <size_t N>
std::string dims(const std::array<int64_t, N>& d, const char* separator) {
  std::string s;
  for (size_t i = 0; i < N; ++i) s += (i ? separator : "") + std::to_string(d[i]);
  return s;
}

}  // namespace

std::string conv_signature(const ConvGeometry& g, const ConvFusion* fusion) {
  return "conv|x=" + dims(g.x, "x") + "|w=" + dims(g.w, "x") + "|s=" + dims(g.stride, ",") +
         "|d=" + dims(g.dilation, ",") + "|p=" + dims(g.pad_begin, ",") + "," + dims(g.pad_end, ",") +
         "|fusion=" +
         (fusion
              ? std::to_string(fusion->bias) + std::to_string(fusion->residual) + std::to_string(fusion->relu)
              : "none") +
         "|dt=" + precision_name(g.type) + (g.nhwc ? "|nhwc" : "");
}

std::string matmul_signature(const LtShape& s) {
  return "matmul|m=" + std::to_string(s.m) + "|k=" + std::to_string(s.k) + "|n=" + std::to_string(s.n) +
         "|bias=" + std::to_string(s.bias) + "|epilogue=" + std::to_string(static_cast<int>(s.epilogue)) +
         "|batch=" + std::to_string(s.batch) + "|dt=" + precision_name(s.type) + (s.accumulate ? "|c" : "");
}

}  // namespace kiln::cuda
