#include "kernels/isa.h"

#include <cpuid.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace metharme::kernels {

namespace {
std::atomic<int> g_active{-1};

// clang 14's __builtin_cpu_supports does not know "f16c": read CPUID leaf 1 (ECX bit 29) directly.
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512-vnni";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c() &&
             __builtin_cpu_supports("bmi2");
    case Isa::kAvx512:
      return isa_supported(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

bool parse_isa(const char* name, Isa* out) {
  if (!std::strcmp(name, "scalar")) *out = Isa::kScalar;
  else if (!std::strcmp(name, "avx2")) *out = Isa::kAvx2;
  else if (!std::strcmp(name, "avx512") || !std::strcmp(name, "avx512-vnni")) *out = Isa::kAvx512;
  else return false;
  return true;
}

Isa detect_isa() {
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa active_isa() {
  int a = g_active.load(std::memory_order_relaxed);
  if (a >= 0) return Isa(a);
  Isa isa = detect_isa();
  if (const char* env = std::getenv("METHARME_ISA"); env && *env) {
    Isa want = isa;
    if (!parse_isa(env, &want))
      std::fprintf(stderr, "metharme: warning: METHARME_ISA='%s' is not one of scalar, avx2, avx512; using %s\n", env,
                   isa_name(isa));
    if (int(want) < int(isa)) isa = want;
  }
  g_active.store(int(isa), std::memory_order_relaxed);
  return isa;
}

void set_active_isa(Isa isa) {
  if (!isa_supported(isa)) throw std::runtime_error(std::string("this CPU does not support ") + isa_name(isa));
  g_active.store(int(isa), std::memory_order_relaxed);
}

}  // namespace metharme::kernels
