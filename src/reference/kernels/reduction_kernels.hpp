// Internal to the reduction kernel family: the registration functions of its
// other files, called from register_reduction_kernels.
#pragma once

#include "reference/kernel.hpp"

namespace kiln::ref {

// Softmax, LogSoftmax, Hardmax and TopK (reduction_softmax_kernels.cpp).
void register_reduction_softmax_kernels(KernelRegistry& registry);
// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (reduction_loss_kernels.cpp).
void register_reduction_loss_kernels(KernelRegistry& registry);

}  // namespace kiln::ref
