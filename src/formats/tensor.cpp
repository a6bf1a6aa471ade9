#include "formats/tensor.h"

#include <cstring>

#include "util/error.h"
#include "util/half.h"

namespace metharme {

namespace {
struct DTypeInfo {
  DType t;
  const char* name;
  size_t size;
  bool is_float;
};
constexpr DTypeInfo kInfo[] = {
    {DType::F32, "F32", 4, true},  {DType::F16, "F16", 2, true},  {DType::BF16, "BF16", 2, true},
    {DType::F64, "F64", 8, true},  {DType::I32, "I32", 4, false}, {DType::I64, "I64", 8, false},
    {DType::I16, "I16", 2, false}, {DType::U8, "U8", 1, false},   {DType::I8, "I8", 1, false},
    {DType::BOOL, "BOOL", 1, false},
};
const DTypeInfo& info(DType t) { return kInfo[size_t(t)]; }
}  // namespace

size_t dtype_size(DType t) { return info(t).size; }
const char* dtype_name(DType t) { return info(t).name; }
bool dtype_is_float(DType t) { return info(t).is_float; }

bool dtype_from_name(std::string_view s, DType* out) {
  for (const auto& i : kInfo) {
    if (s == i.name) {
      *out = i.t;
      return true;
    }
  }
  return false;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {
// File bytes need not be aligned to the element size: read each element through memcpy.
template <class T>
T load(const uint8_t* p, int64_t i) {
  T v;
  std::memcpy(&v, p + size_t(i) * sizeof(T), sizeof(T));
  return v;
}
}  // namespace

void tensor_rows_to_f32(const TensorView& t, int64_t row0, int64_t rows, float* out) {
  int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  int64_t begin = row0 * cols, n = rows * cols;
  MH_CHECK(begin + n <= t.numel(), t.name, ": row range out of bounds");
  if (!dtype_is_float(t.dtype))
    fail(t.source, ": tensor '", t.name, "' has dtype ", dtype_name(t.dtype), ", expected a float type");
  if (n == 0) return;  // `out` and `t.data` may be null
  const uint8_t* p = t.data + size_t(begin) * dtype_size(t.dtype);
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out, p, size_t(n) * 4);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_f32(load<uint16_t>(p, i));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load<uint16_t>(p, i));
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) out[i] = float(load<double>(p, i));
      break;
    default:
      break;
  }
}

void tensor_to_f32(const TensorView& t, float* out) {
  int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  tensor_rows_to_f32(t, 0, cols ? t.numel() / cols : 0, out);
}

std::vector<float> tensor_to_f32(const TensorView& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  tensor_to_f32(t, v.data());
  return v;
}

}  // namespace metharme
