// Reference flash tile (kernels/kv.h): every query row on its own, one key at a time, with the
// running max and sum in double (the streaming softmax of the optimized tiles, without their
// blocks, transposes or vector exp). The scores go through the scalar kv kernels.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kv.h"
#include "kernels/kv_flash_impl.h"

namespace metharme::kernels {

size_t kv_flash_work_floats(int m, int head_dim) { return flash::layout(m, head_dim).total; }

// The optimized decoders' scores, running max / sum and rescale factors (kv_decode_impl.h), or
// the scalar twin's double accumulators and value row (flash_scalar); a multiple of 16 floats, so
// slices of per-thread work areas stay aligned.
size_t kv_decode_work_floats(int n_q, int head_dim) {
  return (std::max(size_t(n_q) * (kDecodeKeys + 3), 3 * size_t(head_dim)) + 15) / 16 * 16;
}

namespace kv_detail {

// work: head_dim doubles of accumulators, then one decoded value row.
void flash_scalar(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t) {
  const KvKernels& ref = kv_kernels_scalar();
  const int hd = t.head_dim;
  const size_t krb = kv_row_bytes(kt, hd), vrb = kv_row_bytes(vt, hd);
  auto* acc = reinterpret_cast<double*>(t.work);
  float* vrow = t.work + 2 * size_t(hd);
  for (int r = 0; r < t.rows; ++r)
    for (int h = 0; h < t.n_q; ++h) {
      const float* q = t.q + int64_t(r) * t.ldq + int64_t(h) * hd;
      double mx = -INFINITY, l = 0;
      std::memset(acc, 0, size_t(hd) * sizeof(double));
      for (int j = 0; j <= t.pos0 + r; ++j) {
        float sf;
        ref.scores(kt, static_cast<const uint8_t*>(k) + size_t(j) * krb, hd, 1, q, hd, 1, &sf, 1);
        const double s = double(sf) * double(t.scale);
        if (s > mx) {
          const double c = std::exp(mx - s);  // 0 for the first key
          for (int d = 0; d < hd; ++d) acc[d] *= c;
          l *= c;
          mx = s;
        }
        const double p = std::exp(s - mx);
        l += p;
        ref.to_f32(vt, static_cast<const uint8_t*>(v) + size_t(j) * vrb, hd, 1, vrow);
        for (int d = 0; d < hd; ++d) acc[d] += p * double(vrow[d]);
      }
      float* out = t.out + int64_t(r) * t.ldo + int64_t(h) * hd;
      for (int d = 0; d < hd; ++d) out[d] = float(acc[d] / l);
    }
}

// Decode is the flash tile of one query row at the last position: the same one-key-at-a-time
// reference, in double.
void decode_scalar(KvType kt, const void* k, KvType vt, const void* v, const DecodeQuery& d) {
  for (int h = 0; h < d.n_q; ++h)
    flash_scalar(
        kt, k, vt, v,
        {d.q + h * d.ldq, d.head_dim, d.out + h * d.ldo, d.head_dim, 1, 1, d.head_dim, d.n_pos - 1, d.scale, d.work});
}

}  // namespace kv_detail

}  // namespace metharme::kernels
