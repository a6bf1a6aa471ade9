// AVX2 decode attention (kernels/kv_decode_impl.h): 8 floats per vector, scores for 4 positions x
// 2 query heads per pass, weighted sums in tiles of 1 head x 64 values.
#include "kernels/kv_decode_impl.h"
#include "kernels/kv_vec_avx2.h"

namespace metharme::kernels::kv_detail {

void decode_avx2(KvType kt, const void* k, KvType vt, const void* v, const DecodeQuery& d) {
  decode::attend<V256>(kt, k, vt, v, d);
}

}  // namespace metharme::kernels::kv_detail
