// Element types and non-owning tensor views over mapped or owned bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace metharme {

enum class DType : uint8_t { F32, F16, BF16, F64, I32, I64, I16, U8, I8, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);                 // safetensors spelling: "F32", "BF16", ...
bool dtype_from_name(std::string_view s, DType* out);
bool dtype_is_float(DType t);

std::string shape_str(const std::vector<int64_t>& shape);  // "[4096, 11008]"

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // row-major, little-endian, contiguous
  size_t nbytes = 0;
  std::string source;  // file it came from, for error messages

  int64_t numel() const;
  int rank() const { return int(shape.size()); }
  int64_t dim(int i) const { return shape.at(size_t(i)); }
  template <class T>
  const T* as() const { return reinterpret_cast<const T*>(data); }
};

// Converts any float tensor (or its rows [row0, row0+rows) of the last dim) to fp32.
void tensor_to_f32(const TensorView& t, float* out);
void tensor_rows_to_f32(const TensorView& t, int64_t row0, int64_t rows, float* out);
std::vector<float> tensor_to_f32(const TensorView& t);

}  // namespace metharme
