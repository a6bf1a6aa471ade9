// Which instruction set the kernels use, chosen once at run time from CPUID.
#pragma once

namespace metharme::kernels {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };  // kAvx512 = F/BW/VL/VNNI

const char* isa_name(Isa isa);
Isa detect_isa();           // the best this CPU supports
bool isa_supported(Isa isa);
// The ISA in use: detect_isa(), or METHARME_ISA=scalar|avx2|avx512 from the environment
// (lowered to what the CPU supports), or the last set_active_isa().
Isa active_isa();
void set_active_isa(Isa isa);  // for tests and benchmarks; throws if unsupported

}  // namespace metharme::kernels
