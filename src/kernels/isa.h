// Which instruction set the kernels use, chosen once at run time from CPUID.
#pragma once

namespace metharme::kernels {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };  // kAvx512 = F/BW/VL/VNNI

const char* isa_name(Isa isa);
Isa detect_isa();           // the best this CPU supports
bool isa_supported(Isa isa);
// "scalar", "avx2", "avx512" or "avx512-vnni" -> *out; false for anything else.
bool parse_isa(const char* name, Isa* out);
// The ISA in use: detect_isa(), or METHARME_ISA=scalar|avx2|avx512 from the environment
// (lowered to what the CPU supports; another value is ignored with one warning), or the last
// set_active_isa(). Each kernel family may still fall below it (kernels/selftest.h).
Isa active_isa();
void set_active_isa(Isa isa);  // for tests and benchmarks; throws if unsupported

}  // namespace metharme::kernels
