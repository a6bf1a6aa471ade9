#include "quant/pack.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"
#include "util/half.h"

namespace metharme::quant {

namespace {

template <class T>
OwnedTensor make_tensor(const std::string& name, DType dt, std::vector<int64_t> shape, const std::vector<T>& v) {
  OwnedTensor t{name, dt, std::move(shape), {}};
  t.data.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(t.data.data(), v.data(), t.data.size());  // memcpy(NULL, ..., 0) is undefined
  return t;
}

}  // namespace

PackFormat parse_pack_format(const std::string& s) {
  if (s == "g2" || s == "gptq") return PackFormat::kG2;
  if (s == "g1") return PackFormat::kG1;
  if (s == "gptq_v2") return PackFormat::kGptqV2;
  fail("unknown --format '", s, "' (expected g2, g1 or gptq_v2)");
}

const char* pack_format_name(PackFormat f) {
  switch (f) {
    case PackFormat::kG2: return "g2";
    case PackFormat::kG1: return "g1";
    case PackFormat::kGptqV2: return "gptq_v2";
  }
  return "?";
}

bool packable(int n_out, int n_in) { return n_out % 32 == 0 && n_in % 32 == 0; }

std::vector<OwnedTensor> pack_linear(const QuantizedLinear& q, const std::string& prefix, PackFormat f, int bits) {
  MH_CHECK(bits == 2 || bits == 4 || bits == 8, "packing supports 2, 4 and 8 bits, not ", bits);
  const int K = q.n_in, N = q.n_out, G = q.n_groups, per = 32 / bits;
  MH_CHECK(packable(N, K), prefix, ": shape [", N, ", ", K, "] cannot be packed");
  if (f == PackFormat::kG1)
    for (int k = 0; k < K; ++k)
      MH_CHECK(q.g_idx[size_t(k)] == k / q.group_size, prefix,
               ": the g1 layout has no g_idx, so act-order with groups needs --static-groups");
  // qweight[r][n]: codes of inputs r*per .. r*per+per-1, lowest input in the lowest bits.
  std::vector<uint32_t> qweight(size_t(K / per) * size_t(N), 0);
  for (int k = 0; k < K; ++k) {
    uint32_t* row = &qweight[size_t(k / per) * size_t(N)];
    const uint8_t* codes = &q.codes[size_t(k) * size_t(N)];
    const int shift = bits * (k % per);
    for (int n = 0; n < N; ++n) row[n] |= uint32_t(codes[n]) << shift;
  }
  // qzeros[g][c]: zero points of outputs c*per .., same bit order.
  const bool minus_one = stores_zero_minus_one(f);
  const int maxq = (1 << bits) - 1;
  std::vector<uint32_t> qzeros(size_t(G) * size_t(N / per), 0);
  for (int g = 0; g < G; ++g)
    for (int n = 0; n < N; ++n) {
      int z = q.zeros[size_t(g) * size_t(N) + size_t(n)];
      if (minus_one) {
        MH_CHECK(z >= 1, prefix, ": zero point 0 cannot be stored as zero-1 (quantize with zero >= 1)");
        --z;
      }
      MH_CHECK(z <= maxq, prefix, ": zero point out of range");
      qzeros[size_t(g) * size_t(N / per) + size_t(n / per)] |= uint32_t(z) << (bits * (n % per));
    }
  std::vector<OwnedTensor> out;
  out.push_back(make_tensor(prefix + ".qweight", DType::I32, {K / per, N}, qweight));
  out.push_back(make_tensor(prefix + ".qzeros", DType::I32, {G, N / per}, qzeros));
  if (fp16_scales(f)) {
    std::vector<uint16_t> s(q.scales.size());
    for (size_t i = 0; i < s.size(); ++i) s[i] = f32_to_fp16(q.scales[i]);
    out.push_back(make_tensor(prefix + ".scales", DType::F16, {G, N}, s));
  } else {
    out.push_back(make_tensor(prefix + ".scales", DType::F32, {G, N}, q.scales));
  }
  if (f == PackFormat::kG1) {
    out.push_back(make_tensor(prefix + ".bias", DType::F32, {N}, std::vector<float>(size_t(N), 0.0f)));
  } else {
    out.push_back(make_tensor(prefix + ".g_idx", DType::I32, {K}, q.g_idx));
  }
  // Tensors in name order, as the checkpoint lists them.
  std::sort(out.begin(), out.end(), [](const OwnedTensor& a, const OwnedTensor& b) { return a.name < b.name; });
  return out;
}

QuantizedLinear unpack_linear(const TensorStore& store, const std::string& prefix, int bits, bool zero_minus_one) {
  const TensorView& qw = store.get(prefix + ".qweight");
  const TensorView& qz = store.get(prefix + ".qzeros");
  const TensorView& sc = store.get(prefix + ".scales");
  const TensorView* gi = store.find(prefix + ".g_idx");
  const int per = 32 / bits;
  MH_CHECK(qw.dtype == DType::I32 && qw.rank() == 2, prefix, ".qweight must be a 2-D int32 tensor");
  MH_CHECK(qz.dtype == DType::I32 && qz.rank() == 2, prefix, ".qzeros must be a 2-D int32 tensor");
  MH_CHECK(sc.rank() == 2, prefix, ".scales must be 2-D");
  QuantizedLinear q;
  q.n_in = int(qw.dim(0)) * per;
  q.n_out = int(qw.dim(1));
  q.n_groups = int(sc.dim(0));
  const size_t K = size_t(q.n_in), N = size_t(q.n_out), G = size_t(q.n_groups);
  MH_CHECK(sc.dim(1) == q.n_out && qz.dim(0) == q.n_groups && qz.dim(1) * per == q.n_out, prefix,
           ": qweight/qzeros/scales shapes disagree");
  MH_CHECK(G > 0 && K % G == 0, prefix, ": ", G, " groups do not divide ", K, " inputs");
  q.group_size = int(K / G);
  q.codes.resize(K * N);
  const uint32_t mask = (1u << bits) - 1;
  const uint32_t* w = qw.as<uint32_t>();
  for (size_t k = 0; k < K; ++k)
    for (size_t n = 0; n < N; ++n)
      q.codes[k * N + n] = uint8_t((w[(k / size_t(per)) * N + n] >> (bits * (k % size_t(per)))) & mask);
  q.zeros.resize(G * N);
  const uint32_t* z = qz.as<uint32_t>();
  for (size_t g = 0; g < G; ++g)
    for (size_t n = 0; n < N; ++n)
      q.zeros[g * N + n] = uint8_t(((z[g * (N / size_t(per)) + n / size_t(per)] >> (bits * (n % size_t(per)))) & mask) +
                                   (zero_minus_one ? 1 : 0));
  q.scales = tensor_to_f32(sc);
  q.g_idx.resize(K);
  if (gi) {
    MH_CHECK(gi->dtype == DType::I32 && gi->numel() == int64_t(K), prefix, ".g_idx must be int32 [", K, "]");
    std::memcpy(q.g_idx.data(), gi->data, K * 4);
    for (int32_t g : q.g_idx) MH_CHECK(g >= 0 && size_t(g) < G, prefix, ".g_idx has group ", g, " of ", G);
  } else {
    for (size_t k = 0; k < K; ++k) q.g_idx[k] = int32_t(k / size_t(q.group_size));
  }
  return q;
}

}  // namespace metharme::quant
