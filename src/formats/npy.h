// NumPy .npy (format 1.0/2.0, little-endian, C order, no pickles): read and write.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tensor.h"

namespace metharme {

struct NpyArray {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const;
  std::vector<float> to_f32() const;    // float types
  std::vector<int64_t> to_i64() const;  // integer types
};

NpyArray read_npy(const std::string& path);
// The bytes of a .npy file; errors name `origin`.
NpyArray parse_npy(std::string_view bytes, const std::string& origin);
void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& shape, const void* data);

}  // namespace metharme
