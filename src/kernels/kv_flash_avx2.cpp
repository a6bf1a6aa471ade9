// AVX2 flash attention tile (kernels/kv_flash_impl.h): 8 floats per vector, scores in blocks of
// 4 keys x 16 queries and outputs in blocks of 4 queries x 24 values (8 and 12 accumulators of
// the 16 registers).
#include <immintrin.h>

#include "kernels/exp_avx2.h"
#include "kernels/kv_flash_impl.h"

namespace metharme::kernels {

namespace {

struct V256 {
  using R = __m256;
  static constexpr int W = 8, kScoreVecs = 2, kOutVecs = 3;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R x) { _mm256_storeu_ps(p, x); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R zero() { return _mm256_setzero_ps(); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R mask_gt(R a, R b, R x) {
    return _mm256_blendv_ps(x, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(a, b, _CMP_GT_OQ));
  }
  // As V512::exp, 2^n built in the exponent field (n in [-126, 127] after the clamp).
  static R exp(R x) {
    const R live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
    return _mm256_and_ps(live, exp8(x));  // 0 below -87, where exp8 clamps
  }
};

}  // namespace

namespace kv_detail {
void flash_avx2(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t) {
  flash::tile<V256>(kt, k, vt, v, t, kv_kernels_avx2().to_f32);
}
}  // namespace kv_detail

}  // namespace metharme::kernels
