// GGUF (llama.cpp's model file, version 3): a streaming writer, enough to hand llama.cpp models
// of any shape for benchmarks. Layout: "GGUF", u32 version, u64 tensor count, u64 key/value
// count, the key/values, tensor infos (name, dims innermost first, ggml type, data offset), zero
// padding to the alignment (32), then each tensor's data at its aligned offset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/fs.h"

namespace metharme {

// ggml tensor types metharme reads and writes (values are ggml's enum). Other values of the enum
// exist (IQ*, TQ*, Q8_K, integer types, ...); ggml_type_name names them so they can be refused.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

// Whether metharme reads tensors of ggml type value `v` (one of the enumerators above).
bool ggml_type_supported(uint32_t v);
// ggml's name of any type value ("Q4_K", "IQ2_XXS", ...), or "type <v>" for values ggml never used.
std::string ggml_type_name(uint32_t v);

// Elements per block and bytes per block of a supported ggml type.
int ggml_block_elems(GgmlType t);
size_t ggml_block_bytes(GgmlType t);
size_t ggml_tensor_bytes(GgmlType t, const std::vector<int64_t>& dims);  // dims[0] is a multiple of the block

class GgufWriter {
 public:
  explicit GgufWriter(const std::string& path);

  // Metadata, in the order written.
  void set_str(const std::string& key, const std::string& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_str_array(const std::string& key, const std::vector<std::string>& v);
  void set_f32_array(const std::string& key, const std::vector<float>& v);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& v);

  // Declare every tensor (dims innermost first, as ggml's ne[]) before writing data.
  void declare(const std::string& name, GgmlType type, const std::vector<int64_t>& dims);
  // Appends bytes of the tensors in declaration order (in any number of pieces).
  void write(const void* data, size_t n);
  void commit();  // checks every declared byte was written, then renames into place
  size_t data_bytes() const { return data_size_; }

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    size_t offset, bytes;
  };
  void emit_header();
  void put(const void* p, size_t n) { out_.write(p, n); }
  void put_u32(uint32_t v) { put(&v, 4); }
  void put_u64(uint64_t v) { put(&v, 8); }
  void put_str(const std::string& s);
  void kv_key(const std::string& key, uint32_t type);

  AtomicFile out_;
  std::string kv_bytes_;  // encoded key/values
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
  size_t data_size_ = 0, written_ = 0, cur_ = 0;
  bool header_done_ = false;
};

}  // namespace metharme
