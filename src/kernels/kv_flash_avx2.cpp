// AVX2 flash attention tile (kernels/kv_flash_impl.h): 8 floats per vector, scores in blocks of
// 4 keys x 16 queries and outputs in blocks of 4 queries x 24 values (8 and 12 accumulators of
// the 16 registers).
#include "kernels/kv_flash_impl.h"
#include "kernels/kv_vec_avx2.h"

namespace metharme::kernels {

namespace kv_detail {
void flash_avx2(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t) {
  flash::tile<V256>(kt, k, vt, v, t, kv_kernels_avx2().to_f32);
}
}  // namespace kv_detail

}  // namespace metharme::kernels
