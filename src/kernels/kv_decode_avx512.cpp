// AVX-512 decode attention (kernels/kv_decode_impl.h): 16 floats per vector, scores for 4
// positions x 4 query heads per pass, weighted sums in tiles of 2 heads x 128 values.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/kv_decode_impl.h"
#include "kernels/kv_vec_avx512.h"

namespace metharme::kernels::kv_detail {

void decode_avx512(KvType kt, const void* k, KvType vt, const void* v, const DecodeQuery& d) {
  decode::attend<V512>(kt, k, vt, v, d);
}

}  // namespace metharme::kernels::kv_detail
