// Self-test of the KV kernels (kernels/selftest.h): q8 and q4 rows written by the scalar
// quantizer, head_dim 64 (the vector paths) and 40 (a partial block: the fallback), 7 positions
// (a group of 4 and a tail of 3) and 3 query heads (a pair and a single), against the scalar twins;
// the flash prefill tile on the same rows; the decode kernel on 70 positions (two blocks, so the
// running max and the rescale are used) for every key type, each with another value type.
// f32 / f16 rows are the dense family's kernels (tested there; calling them from here would
// re-enter checked_isa while it holds the self-test lock).
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kv.h"
#include "kernels/selftest.h"

namespace metharme::kernels {

namespace {

struct Rand {
  uint32_t s = 0x9E3779B9u;
  float next() {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return float(s >> 8) * (2.0f / 16777216.0f) - 1.0f;  // [-1, 1)
  }
};

void check(Isa isa, SelfTest& t, KvType type, int head_dim, Rand& r) {
  constexpr int kPos = 7, kHeads = 3;
  const KvKernels& opt = kv_kernels(isa);
  const KvKernels& ref = kv_kernels_scalar();
  std::vector<float> x(size_t(kPos) * size_t(head_dim)), q(size_t(kHeads) * size_t(head_dim)), p(size_t(kHeads) * kPos);
  for (auto& v : x) v = 3 * r.next();
  for (auto& v : q) v = r.next();
  for (auto& v : p) v = r.next();
  std::vector<uint8_t> rows(kv_row_bytes(type, head_dim) * kPos);
  ref.from_f32(type, x.data(), head_dim, kPos, rows.data());
  const std::string tag = std::string(kv_type_name(type)) + " hd=" + std::to_string(head_dim);

  std::vector<float> so(size_t(kHeads) * kPos, -1.0f), sr(so);
  opt.scores(type, rows.data(), head_dim, kPos, q.data(), head_dim, kHeads, so.data(), kPos);
  ref.scores(type, rows.data(), head_dim, kPos, q.data(), head_dim, kHeads, sr.data(), kPos);
  t.compare("kv scores " + tag, so.data(), sr.data(), so.size(), 1e-5, head_dim * 3e-6);

  std::vector<float> oo(q.size(), 0.5f), orf(oo);
  opt.weighted_sum(type, rows.data(), head_dim, kPos, p.data(), kPos, kHeads, oo.data(), head_dim);
  ref.weighted_sum(type, rows.data(), head_dim, kPos, p.data(), kPos, kHeads, orf.data(), head_dim);
  t.compare("kv weighted_sum " + tag, oo.data(), orf.data(), oo.size(), 1e-5, 3e-5);

  std::vector<float> fo(x.size()), fr(x.size());
  opt.to_f32(type, rows.data(), head_dim, kPos, fo.data());
  ref.to_f32(type, rows.data(), head_dim, kPos, fr.data());
  t.compare_exact("kv to_f32 " + tag, fo.data(), fr.data(), fo.size() * 4);

  // Flash tile: 3 query rows x 2 heads at positions 4..6 over the 7 rows as keys and values (a
  // causal mask inside the one key block), against the scalar twin.
  constexpr int kRows = 3, kQ = 2;
  std::vector<float> qf(size_t(kRows * kQ) * size_t(head_dim));
  for (auto& v : qf) v = r.next();
  std::vector<float> work(kv_flash_work_floats(kRows * kQ, head_dim) + 16);
  float* w = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(work.data()) + 63) / 64 * 64);
  std::vector<float> ao(qf.size()), ar(qf.size());
  const int64_t ld = int64_t(kQ) * head_dim;
  opt.flash(type, rows.data(), type, rows.data(), {qf.data(), ld, ao.data(), ld, kRows, kQ, head_dim, 4, 0.125f, w});
  ref.flash(type, rows.data(), type, rows.data(), {qf.data(), ld, ar.data(), ld, kRows, kQ, head_dim, 4, 0.125f, w});
  t.compare("kv flash " + tag, ao.data(), ar.data(), ao.size(), 1e-5, 1e-5);
}

// Decode reads f32 / f16 rows with its own loaders (no dense kernels), so every type is checked.
void check_decode(Isa isa, SelfTest& t, KvType kt, KvType vt, int head_dim, Rand& r) {
  constexpr int kPos = 70, kHeads = 3;
  std::vector<float> x(size_t(kPos) * size_t(head_dim)), y(x.size()), q(size_t(kHeads) * size_t(head_dim));
  for (auto& v : x) v = 3 * r.next();
  for (auto& v : y) v = r.next();
  for (auto& v : q) v = r.next();
  const KvKernels& ref = kv_kernels_scalar();
  std::vector<uint8_t> kr(kv_row_bytes(kt, head_dim) * kPos), vr(kv_row_bytes(vt, head_dim) * kPos);
  ref.from_f32(kt, x.data(), head_dim, kPos, kr.data());
  ref.from_f32(vt, y.data(), head_dim, kPos, vr.data());
  std::vector<double> work((kv_decode_work_floats(kHeads, head_dim) + 1) / 2);
  float* w = reinterpret_cast<float*>(work.data());
  std::vector<float> got(q.size()), want(q.size());
  const int64_t ld = head_dim;
  kv_kernels(isa).decode(kt, kr.data(), vt, vr.data(), {q.data(), ld, got.data(), ld, kHeads, head_dim, kPos, 0.3f, w});
  ref.decode(kt, kr.data(), vt, vr.data(), {q.data(), ld, want.data(), ld, kHeads, head_dim, kPos, 0.3f, w});
  t.compare(std::string("kv decode ") + kv_type_name(kt) + "/" + kv_type_name(vt) + " hd=" + std::to_string(head_dim),
            got.data(), want.data(), got.size(), 1e-5, 1e-5);
}

void run(Isa isa, SelfTest& t) {
  Rand r;
  for (KvType type : {KvType::kQ8, KvType::kQ4})
    for (int hd : {64, 40}) check(isa, t, type, hd, r);
  const KvType types[] = {KvType::kF32, KvType::kF16, KvType::kQ8, KvType::kQ4};
  for (int i = 0; i < 4; ++i)
    for (int hd : {64, 40}) check_decode(isa, t, types[i], types[(i + 1) % 4], hd, r);
}

}  // namespace

KernelFamily& kv_family() {
  static KernelFamily f{"kv", run};
  return f;
}

}  // namespace metharme::kernels
