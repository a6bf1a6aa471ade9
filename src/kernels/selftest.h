// Known-answer self-test of the dispatched kernels. The first time a kernel family (one dispatch
// table: int4, dense, ...) is used at an ISA above scalar, its kernels run once on a small fixed
// problem beside their scalar twins (well under a millisecond). A mismatch prints one warning naming
// the family and the ISA, and that family falls back to the next lower ISA (AVX-512 -> AVX2 ->
// scalar), which is tested in turn.
//
// METHARME_SELFTEST_SIMULATE_MISMATCH=ISA[,ISA...] or FAMILY:ISA[,...] (e.g. avx512, int4:avx2)
// perturbs the named optimized outputs before the comparison, so the fallback path can be tested
// on a sound CPU. Unset in normal use.
//
// Adding a family: write a `void run(Isa isa, SelfTest& t)` that computes the family's outputs
// with kernels(isa) and kernels(kScalar) and calls t.compare / t.compare_exact on each pair, give
// it a KernelFamily, and list that family in kernel_families() (kernels/selftest.cpp). Its
// dispatch then asks for the checked ISA, as q4_kernels() does (kernels/q4_scalar.cpp):
//   const FooKernels& foo_kernels() { return foo_kernels(checked_isa(foo_family())); }
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/isa.h"

namespace metharme::kernels {

struct KernelCheck {
  std::string kernel;  // e.g. "gemm_q8 M=5"
  double max_err = 0;  // largest |optimized - scalar|
  bool pass = true;
};

// Collects the checks of one family at one ISA.
class SelfTest {
 public:
  explicit SelfTest(bool simulate_mismatch) : simulate_(simulate_mismatch) {}
  // Passes when every |opt[i] - ref[i]| <= abs_tol + rel_tol * |ref[i]| (and nothing is NaN).
  void compare(const std::string& kernel, const float* opt, const float* ref, size_t n, double rel_tol, double abs_tol);
  // Bit-for-bit equal (conversions, quantized activations, dequantized weights).
  void compare_exact(const std::string& kernel, const void* opt, const void* ref, size_t bytes);
  const std::vector<KernelCheck>& checks() const { return checks_; }
  bool pass() const;

 private:
  bool simulate_;
  std::vector<KernelCheck> checks_;
};

struct KernelFamily {
  const char* name;                         // "int4", "dense"
  void (*run)(Isa isa, SelfTest& t);        // isa's kernels against the scalar ones on a fixed problem
  std::atomic<int> verdict[3] = {0, 0, 0};  // per Isa value: 0 untested, 1 passed, 2 failed
};

// The families, in the order `info --self-test` prints them.
std::span<KernelFamily* const> kernel_families();
KernelFamily& q4_family();     // kernels/q4_selftest.cpp
KernelFamily& dense_family();  // kernels/dense_selftest.cpp
KernelFamily& i8_family();     // kernels/i8w_selftest.cpp (GGUF Q8_0, Q5_K, Q6_K)
KernelFamily& kv_family();     // kernels/kv_selftest.cpp
// The AMX int4 product, tested at kAvx512 where amx_supported(); not in kernel_families(): it is
// an extra path beside the int4 tables (q4_gemm_q8_amx(), kernels/q4.h), not an ISA level.
KernelFamily& q4_amx_family();  // kernels/q4_selftest.cpp

// The ISA to use for family f: active_isa(), lowered past every ISA whose self-test failed.
// Runs the self-test of an ISA the first time it is asked for (thread-safe); later calls cost two
// atomic loads.
Isa checked_isa(KernelFamily& f);

struct FamilyReport {
  const char* family = "";
  Isa isa = Isa::kScalar;
  std::vector<KernelCheck> checks;
  double micros = 0;  // wall time of the run, optimized and scalar kernels together
  bool pass = true;
};
// Wall time of the self-tests checked_isa has run so far, all families (serve's /metrics).
double self_test_seconds();
// Runs family f at isa now (no caching, no fallback), with the mismatch simulation when asked.
FamilyReport run_self_test(KernelFamily& f, Isa isa, bool simulate_mismatch);
// Whether METHARME_SELFTEST_SIMULATE_MISMATCH names family f at isa.
bool simulated_mismatch(const KernelFamily& f, Isa isa);

}  // namespace metharme::kernels
