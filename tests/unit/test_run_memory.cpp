// The memory plan's promise: activations live in one planned arena, so a
// warm engine's run allocates no activation memory. run_allocation_probe
// counts every operator new of one warm run in its own process. What a run
// may allocate: the output tensors it hands back (the API returns them by
// value), and small bookkeeping (oneDNN's per-call argument maps, shape
// chains on reference kernels).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#ifndef KILN_RUN_ALLOCATION_PROBE
#error "KILN_RUN_ALLOCATION_PROBE must name the probe executable"
#endif

namespace kiln {
namespace {

struct Counts {
  long long allocations = -1, large = -1, large_bytes = -1, activation_bytes = -1, output_bytes = -1;
};

Counts probe(const std::string& model, bool control = false) {
  std::string command = std::string(KILN_RUN_ALLOCATION_PROBE) + " " + model + (control ? " --control" : "");
  FILE* pipe = ::popen(command.c_str(), "r");
  Counts c;
  if (!pipe) return c;
  int fields = std::fscanf(pipe, "%lld %lld %lld %lld %lld", &c.allocations, &c.large, &c.large_bytes,
                           &c.activation_bytes, &c.output_bytes);
  if (::pclose(pipe) != 0 || fields != 5) return Counts{};
  return c;
}

void expect_no_activation_allocations(const std::string& model) {
  SCOPED_TRACE(model);
  Counts c = probe(model);
  ASSERT_GE(c.activation_bytes, 1 << 20) << "the probe failed, or the model is too small to tell";
  // Allocations of 64 KiB or more: only the returned outputs (each with a
  // few bytes of bookkeeping).
  EXPECT_LE(c.large_bytes, c.output_bytes + 4096)
      << c.large << " large allocations, " << c.large_bytes << " bytes, against " << c.output_bytes
      << " bytes of outputs and " << c.activation_bytes << " of activations";
  std::printf(
      "%s: a warm run made %lld allocations, %lld of 64 KiB or more (%lld bytes; outputs %lld bytes); "
      "activations %lld bytes\n",
      model.c_str(), c.allocations, c.large, c.large_bytes, c.output_bytes, c.activation_bytes);
}

TEST(CpuRunMemory, TheProbeSeesAnActivationSizedAllocation) {
  Counts c = probe("resnet18", true);
  ASSERT_GT(c.activation_bytes, 0);
  EXPECT_GE(c.large_bytes, c.activation_bytes);
}

TEST(CpuRunMemory, AWarmResnet18RunAllocatesNoActivationMemory) {
  expect_no_activation_allocations("resnet18");
}

TEST(CpuRunMemory, AWarmMobilenetV2RunAllocatesNoActivationMemory) {
  expect_no_activation_allocations("mobilenet_v2");
}

TEST(CpuRunMemory, AWarmBertRunAllocatesNoActivationMemory) {
  // BERT's shape chains (Shape, Gather, Concat...) run on reference kernels
  // inside the engine: they must not allocate activations per run either.
  expect_no_activation_allocations("bert_base");
}

}  // namespace
}  // namespace kiln
