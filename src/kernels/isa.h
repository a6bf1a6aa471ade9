// Which instruction set the kernels use, chosen once at run time from CPUID.
#pragma once

namespace metharme::kernels {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };  // kAvx512 = F/BW/VL/VNNI

const char* isa_name(Isa isa);
Isa detect_isa();           // the best this CPU supports
bool isa_supported(Isa isa);
// "scalar", "avx2", "avx512" or "avx512-vnni" ("amx": kAvx512 with AMX) -> *out; false for anything else.
bool parse_isa(const char* name, Isa* out);
// The ISA in use: detect_isa(), or METHARME_ISA=scalar|avx2|avx512 from the environment
// (lowered to what the CPU supports; another value is ignored with one warning), or the last
// set_active_isa(). Each kernel family may still fall below it (kernels/selftest.h).
Isa active_isa();
void set_active_isa(Isa isa);  // for tests and benchmarks; throws if unsupported

// AMX (AMX-TILE + AMX-INT8) is an extension above kAvx512 used by the int4 prefill product only
// (kernels/q4_amx.cpp), not an Isa level. Supported: CPUID leaf 7 EDX bits 24/25, the OS saves the
// tile state (XCR0 bits 17/18) and Linux granted this process the tile data (arch_prctl
// ARCH_REQ_XCOMP_PERM, asked once). Thread-safe.
bool amx_supported();
// Whether to use it: amx_supported(), active_isa() is kAvx512 and METHARME_ISA is not
// avx512/avx512-vnni (METHARME_ISA=amx or unset leaves it on), unless set_amx_enabled(false).
bool amx_enabled();
void set_amx_enabled(bool on);  // for tests and benchmarks; on only takes effect where supported

}  // namespace metharme::kernels
