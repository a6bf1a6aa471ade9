#include "formats/gguf.h"

#include <cstring>

#include "util/error.h"

namespace metharme {

namespace {

constexpr size_t kAlign = 32;
// GGUF value types.
enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kStr = 8, kArr = 9 };

template <class T>
void append(std::string& s, const T& v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void append_str(std::string& s, const std::string& v) {
  append(s, uint64_t(v.size()));
  s += v;
}

}  // namespace

bool ggml_type_supported(uint32_t v) {
  switch (GgmlType(v)) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K: return true;
  }
  return false;
}

std::string ggml_type_name(uint32_t v) {
  // ggml's enum ggml_type; gaps are values ggml retired.
  static const char* const names[] = {
      "F32",     "F16",    "Q4_0",    "Q4_1",    nullptr,   nullptr, "Q5_0",    "Q5_1",     "Q8_0",     "Q8_1",
      "Q2_K",    "Q3_K",   "Q4_K",    "Q5_K",    "Q6_K",    "Q8_K",  "IQ2_XXS", "IQ2_XS",   "IQ3_XXS",  "IQ1_S",
      "IQ4_NL",  "IQ3_S",  "IQ2_S",   "IQ4_XS",  "I8",      "I16",   "I32",     "I64",      "F64",      "IQ1_M",
      "BF16",    "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8",
      "MXFP4"};
  if (v < sizeof(names) / sizeof(names[0]) && names[v]) return names[v];
  return cat("type ", v);
}

int ggml_block_elems(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16: return 1;
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0: return 32;
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K: return 256;
  }
  return 1;
}

size_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return 4;
    case GgmlType::kF16:
    case GgmlType::kBF16: return 2;
    case GgmlType::kQ4_0: return 2 + 16;             // fp16 d, 32 nibbles
    case GgmlType::kQ4_1: return 2 + 2 + 16;         // fp16 d, fp16 m, 32 nibbles
    case GgmlType::kQ5_0: return 2 + 4 + 16;         // fp16 d, 32 high bits, 32 nibbles
    case GgmlType::kQ5_1: return 2 + 2 + 4 + 16;     // fp16 d, fp16 m, 32 high bits, 32 nibbles
    case GgmlType::kQ8_0: return 2 + 32;             // fp16 d, 32 int8
    case GgmlType::kQ2_K: return 16 + 64 + 2 + 2;    // 4-bit scale|min pairs, 2-bit codes, fp16 d, dmin
    case GgmlType::kQ3_K: return 32 + 64 + 12 + 2;   // high bits, 2-bit codes, 6-bit scales, fp16 d
    case GgmlType::kQ4_K: return 2 + 2 + 12 + 128;   // fp16 d, dmin, 6-bit scales+mins, nibbles
    case GgmlType::kQ5_K: return 2 + 2 + 12 + 32 + 128;  // ... plus 256 high bits
    case GgmlType::kQ6_K: return 128 + 64 + 16 + 2;  // ql, qh, int8 scales, fp16 d
  }
  return 0;
}

size_t ggml_tensor_bytes(GgmlType t, const std::vector<int64_t>& dims) {
  MH_CHECK(!dims.empty() && dims[0] % ggml_block_elems(t) == 0, "gguf: row length ", dims.empty() ? 0 : dims[0],
           " is not a multiple of the block size ", ggml_block_elems(t));
  size_t n = 1;
  for (int64_t d : dims) n *= size_t(d);
  return n / size_t(ggml_block_elems(t)) * ggml_block_bytes(t);
}

GgufWriter::GgufWriter(const std::string& path) : out_(path) {}

void GgufWriter::kv_key(const std::string& key, uint32_t type) {
  MH_CHECK(!header_done_, "gguf: metadata '", key, "' after data was written");
  append_str(kv_bytes_, key);
  append(kv_bytes_, type);
  ++n_kv_;
}

void GgufWriter::set_str(const std::string& key, const std::string& v) {
  kv_key(key, kStr);
  append_str(kv_bytes_, v);
}
void GgufWriter::set_u32(const std::string& key, uint32_t v) {
  kv_key(key, kU32);
  append(kv_bytes_, v);
}
void GgufWriter::set_f32(const std::string& key, float v) {
  kv_key(key, kF32);
  append(kv_bytes_, v);
}
void GgufWriter::set_bool(const std::string& key, bool v) {
  kv_key(key, kBool);
  append(kv_bytes_, uint8_t(v ? 1 : 0));
}
void GgufWriter::set_str_array(const std::string& key, const std::vector<std::string>& v) {
  kv_key(key, kArr);
  append(kv_bytes_, kStr);
  append(kv_bytes_, uint64_t(v.size()));
  for (const auto& s : v) append_str(kv_bytes_, s);
}
void GgufWriter::set_f32_array(const std::string& key, const std::vector<float>& v) {
  kv_key(key, kArr);
  append(kv_bytes_, kF32);
  append(kv_bytes_, uint64_t(v.size()));
  kv_bytes_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}
void GgufWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  kv_key(key, kArr);
  append(kv_bytes_, kI32);
  append(kv_bytes_, uint64_t(v.size()));
  kv_bytes_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t));
}

void GgufWriter::declare(const std::string& name, GgmlType type, const std::vector<int64_t>& dims) {
  MH_CHECK(!header_done_, "gguf: declare('", name, "') after data was written");
  MH_CHECK(dims.size() >= 1 && dims.size() <= 4, "gguf: tensor '", name, "' needs 1 to 4 dimensions");
  size_t bytes = ggml_tensor_bytes(type, dims);
  size_t offset = (data_size_ + kAlign - 1) / kAlign * kAlign;
  tensors_.push_back({name, type, dims, offset, bytes});
  data_size_ = offset + bytes;
}

void GgufWriter::put_str(const std::string& s) {
  put_u64(s.size());
  put(s.data(), s.size());
}

void GgufWriter::emit_header() {
  put("GGUF", 4);
  put_u32(3);
  put_u64(tensors_.size());
  put_u64(n_kv_);
  put(kv_bytes_.data(), kv_bytes_.size());
  for (const auto& t : tensors_) {
    put_str(t.name);
    put_u32(uint32_t(t.dims.size()));
    for (int64_t d : t.dims) put_u64(uint64_t(d));
    put_u32(uint32_t(t.type));
    put_u64(t.offset);
  }
  static const char zeros[kAlign] = {};
  size_t pad = (kAlign - out_.written() % kAlign) % kAlign;
  put(zeros, pad);
  header_done_ = true;
}

void GgufWriter::write(const void* data, size_t n) {
  if (!header_done_) emit_header();
  static const char zeros[kAlign] = {};
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    MH_CHECK(cur_ < tensors_.size(), "gguf writer: more bytes written than declared");
    const Tensor& t = tensors_[cur_];
    if (written_ < t.offset) {  // padding before this tensor
      put(zeros, t.offset - written_);
      written_ = t.offset;
    }
    size_t take = std::min(n, t.offset + t.bytes - written_);
    put(p, take);
    written_ += take;
    p += take;
    n -= take;
    if (written_ == t.offset + t.bytes) ++cur_;
  }
}

void GgufWriter::commit() {
  if (!header_done_) emit_header();
  MH_CHECK(written_ == data_size_, "gguf writer: ", written_, " of ", data_size_, " bytes written");
  out_.commit();
}

}  // namespace metharme
