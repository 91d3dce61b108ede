// 2-D linear Resize of plain NCHW planes as kiln's own loop, for a
// segmentation head's final upsample into the returned tensor.
//
// Why: oneDNN 2.6's jit resampling took 0.9 ms to upsample DeepLabV3's 21
// class maps from 14x14 to 224x224 over plain NCHW (about 1.2 G outputs a
// second, a tenth of DeepLabV3-MobileNetV3's time at batch 1). Each output
// row here is the blend of two input rows, computed once per row, then
// 16 outputs at a time from that row: two gathers and two multiply-adds.
//
// The coordinates are oneDNN's (and ONNX's half_pixel): input x =
// (o + 0.5) * in / out - 0.5, clamped to the first and last input, so the
// layer can use either with the same results (resample_layer.hpp decides
// when those are ONNX's).
//
// Stateless apart from the taps; run() is safe to call concurrently on
// distinct buffers.
#pragma once

#include <cstdint>
#include <vector>

namespace kiln::cpu {

class BilinearPlanes {
 public:
  BilinearPlanes(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w);
  // src: planes x in_h x in_w floats; dst: planes x out_h x out_w. On
  // oneDNN's OpenMP threads.
  void run(const float* src, float* dst) const;

  // Per output coordinate along one axis: the two input coordinates it
  // blends and the weight of the second.
  struct Taps {
    std::vector<int32_t> lo, hi;
    std::vector<float> weight;
  };
  static Taps taps(int64_t in, int64_t out);

 private:
  int64_t m_planes, m_in_h, m_in_w, m_out_h, m_out_w;
  Taps m_rows, m_cols;
};

}  // namespace kiln::cpu
