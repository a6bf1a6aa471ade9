// GGUF reader (versions 2 and 3; llama.cpp's model file). The file is memory-mapped; tensor data
// and array payloads are views into the mapping (valid while the GgufFile lives).
//
// Layout (all little-endian): "GGUF", u32 version, u64 tensor count, u64 key/value count; each
// key/value is a string key (u64 length + bytes), a u32 value type and the value (arrays: u32
// element type, u64 count, elements); each tensor info is a string name, u32 n_dims, u64 dims
// (innermost first, ggml's ne[]), u32 ggml type, u64 offset relative to the data section; the
// data section starts at the next multiple of general.alignment (default 32).
// Every count, size and offset is checked against the file before use; errors name the file and
// the field.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "formats/gguf.h"
#include "formats/tensor.h"
#include "util/mapped_file.h"

namespace metharme {

// GGUF metadata value types (gguf_type).
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kStr = 8,
  kArr = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
const char* gguf_type_name(GgufType t);

struct GgufValue {
  GgufType type = GgufType::kU8;
  // Scalars: integers in i (signed types) or u (unsigned, bool), floats in f, strings in str.
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string_view str;
  // Arrays: element type, count, and the raw little-endian elements (fixed-size element types);
  // string arrays in strs; nested arrays are counted but not decoded.
  GgufType elem = GgufType::kU8;
  uint64_t count = 0;
  const uint8_t* data = nullptr;
  std::vector<std::string_view> strs;

  bool is_int() const;    // any integer type (not bool)
  bool is_float() const;  // F32 or F64
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> dims;  // innermost first (ggml ne[]); dims[0] is a multiple of the block
  int64_t numel = 0;
  uint64_t offset = 0;  // from the start of the data section
  size_t nbytes = 0;
  const uint8_t* data = nullptr;

  int64_t row_len() const { return dims[0]; }
  int64_t n_rows() const { return dims[0] ? numel / dims[0] : 0; }
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);  // maps and parses; throws Error naming path and field

  const std::string& path() const { return file_.path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  size_t data_offset() const { return data_offset_; }  // file offset of the data section

  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters: an absent key gives `def` (or an error for the required forms); a present key
  // of the wrong type or out of range is an error naming the file and the key.
  uint64_t get_uint(const std::string& key) const;
  uint64_t get_uint(const std::string& key, uint64_t def) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;
  std::string get_str(const std::string& key) const;
  std::string get_str(const std::string& key, const std::string& def) const;
  std::vector<std::string> get_str_array(const std::string& key) const;
  std::vector<float> get_f32_array(const std::string& key) const;    // F32 (or F64) elements
  std::vector<int32_t> get_i32_array(const std::string& key) const;  // any integer elements in int32 range

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor(const std::string& name) const;  // error naming the file if missing

  // A view of an F32/F16/BF16 tensor with the row-major shape (dims reversed), into the mapping.
  TensorView view(const GgufTensorInfo& t) const;

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Whether `path` is an existing regular file starting with the GGUF magic.
bool is_gguf_file(const std::string& path);

}  // namespace metharme
