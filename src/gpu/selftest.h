// A known-answer check of a device before the model trusts it: the int4, int8-code and f16 matmuls
// on small random data against the CPU's scalar twins (as kernels/selftest.h does for
// the CPU's ISA kernels). METHARME_SELFTEST_SIMULATE_MISMATCH containing "vulkan" fails it (a
// documented test hook).
#pragma once

#include <string>

#include "gpu/device.h"

namespace metharme::gpu {

// Empty when the device agrees with the CPU; otherwise which check failed and by how much.
std::string device_self_test(Context& ctx);

}  // namespace metharme::gpu
