#include "kernels/isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

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

std::atomic<int> g_amx{-1};  // set_amx_enabled: -1 unset, 0 off, 1 on

// Whether the OS saves the tile state (XCR0 bits 17 XTILECFG and 18 XTILEDATA); needs OSXSAVE.
bool os_saves_tiles() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & (3u << 17)) == (3u << 17);
}

bool detect_amx() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!(d & (1u << 24)) || !(d & (1u << 25))) return false;  // AMX-TILE, AMX-INT8
  if (!os_saves_tiles()) return false;
  // Linux (5.16+) hands out the 8 KiB tile data state only on request, for the whole process.
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}
}  // namespace

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
  else if (!std::strcmp(name, "avx512") || !std::strcmp(name, "avx512-vnni") || !std::strcmp(name, "amx"))
    *out = Isa::kAvx512;
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
      std::fprintf(stderr, "metharme: warning: METHARME_ISA='%s' is not one of scalar, avx2, avx512, amx; using %s\n",
                   env, isa_name(isa));
    if (int(want) < int(isa)) isa = want;
  }
  g_active.store(int(isa), std::memory_order_relaxed);
  return isa;
}

void set_active_isa(Isa isa) {
  if (!isa_supported(isa)) throw std::runtime_error(std::string("this CPU does not support ") + isa_name(isa));
  g_active.store(int(isa), std::memory_order_relaxed);
}

bool amx_supported() {
  static const bool ok = detect_amx();
  return ok;
}

bool amx_enabled() {
  if (!amx_supported() || active_isa() != Isa::kAvx512) return false;
  const int set = g_amx.load(std::memory_order_relaxed);
  if (set >= 0) return set == 1;
  static const bool env_on = [] {
    const char* env = std::getenv("METHARME_ISA");
    return !(env && (!std::strcmp(env, "avx512") || !std::strcmp(env, "avx512-vnni")));
  }();
  return env_on;
}

void set_amx_enabled(bool on) { g_amx.store(on ? 1 : 0, std::memory_order_relaxed); }

}  // namespace metharme::kernels
