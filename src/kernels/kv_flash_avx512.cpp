// AVX-512 flash attention tile (kernels/kv_flash_impl.h): 16 floats per vector, scores in blocks
// of 4 keys x 64 queries and outputs in blocks of 4 queries x 64 values (16 accumulators each).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels/kv_flash_impl.h"
#include "kernels/kv_vec_avx512.h"

namespace metharme::kernels {

namespace kv_detail {
void flash_avx512(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t) {
  flash::tile<V512>(kt, k, vt, v, t, kv_kernels_avx512().to_f32);
}
}  // namespace kv_detail

}  // namespace metharme::kernels
