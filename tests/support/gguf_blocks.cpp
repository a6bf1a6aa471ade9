#include "support/gguf_blocks.h"

#include <cstring>

#include "util/half.h"

namespace metharme::test {

std::vector<uint8_t> random_gguf_blocks(GgmlType t, int N, int K, std::mt19937& rng) {
  std::vector<uint8_t> b(size_t(N) * ggml_tensor_bytes(t, {K}));
  for (auto& x : b) x = uint8_t(rng());
  const size_t bb = ggml_block_bytes(t);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  auto put = [&](size_t at, float v) {  // v times a random factor in [0.5, 1.5)
    const uint16_t h = f32_to_fp16(v * u(rng));
    std::memcpy(&b[at], &h, 2);
  };
  for (size_t off = 0; off < b.size(); off += bb) switch (t) {
      case GgmlType::kQ4_0:
      case GgmlType::kQ5_0:
        put(off, 0.002f);
        break;
      case GgmlType::kQ4_1:
      case GgmlType::kQ5_1:
        put(off, 0.002f), put(off + 2, rng() & 1 ? 0.02f : -0.02f);
        break;
      case GgmlType::kQ4_K:
        put(off, 0.002f), put(off + 2, 0.001f);
        break;
      case GgmlType::kQ5_K:
        put(off, 0.0005f), put(off + 2, 0.001f);
        break;
      case GgmlType::kQ8_0:
        put(off, 0.0005f);
        break;
      case GgmlType::kQ3_K:
        put(off + 108, 0.0005f);
        break;
      case GgmlType::kQ6_K:
        put(off + 208, 0.0002f);
        break;
      default:
        break;
    }
  return b;
}

GgufTensorInfo gguf_tensor_view(GgmlType t, const std::vector<uint8_t>& bytes, int N, int K, const std::string& name) {
  GgufTensorInfo ti;
  ti.name = name;
  ti.type = t;
  ti.dims = {K, N};
  ti.numel = int64_t(N) * K;
  ti.nbytes = bytes.size();
  ti.data = bytes.data();
  return ti;
}

}  // namespace metharme::test
