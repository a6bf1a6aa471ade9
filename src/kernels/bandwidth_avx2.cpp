// AVX2 streaming read for the bandwidth probe: four independent accumulators, 128 bytes a step.
#include <immintrin.h>

#include "kernels/bandwidth.h"

namespace metharme::kernels {

uint64_t read_sum_avx2(const void* p, size_t n) {
  const auto* v = static_cast<const __m256i*>(p);
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (size_t i = 0; i < n / 32; i += 4) {
    a = _mm256_add_epi64(a, _mm256_loadu_si256(v + i));
    b = _mm256_add_epi64(b, _mm256_loadu_si256(v + i + 1));
    c = _mm256_add_epi64(c, _mm256_loadu_si256(v + i + 2));
    d = _mm256_add_epi64(d, _mm256_loadu_si256(v + i + 3));
  }
  a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
  // Summed as unsigned: the total wraps by design (only the reads matter), signed overflow would be UB.
  return uint64_t(_mm256_extract_epi64(a, 0)) + uint64_t(_mm256_extract_epi64(a, 1)) +
         uint64_t(_mm256_extract_epi64(a, 2)) + uint64_t(_mm256_extract_epi64(a, 3));
}

}  // namespace metharme::kernels
