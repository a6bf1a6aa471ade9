#include "formats/npy.h"

#include <cstring>

#include "util/error.h"
#include "util/fs.h"
#include "util/half.h"

namespace metharme {

namespace {
constexpr uint64_t kMaxElements = 1ull << 48;
constexpr size_t kMaxRank = 32;
}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<float> NpyArray::to_f32() const {
  TensorView t;
  t.name = "npy";
  t.dtype = dtype;
  t.shape = {numel()};
  t.data = bytes.data();
  t.nbytes = bytes.size();
  return tensor_to_f32(t);
}

std::vector<int64_t> NpyArray::to_i64() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype) {
      case DType::I32: { int32_t v; std::memcpy(&v, bytes.data() + 4 * i, 4); out[i] = v; break; }
      case DType::I64: { int64_t v; std::memcpy(&v, bytes.data() + 8 * i, 8); out[i] = v; break; }
      case DType::I16: { int16_t v; std::memcpy(&v, bytes.data() + 2 * i, 2); out[i] = v; break; }
      case DType::U8: out[i] = bytes[i]; break;
      case DType::I8: out[i] = int8_t(bytes[i]); break;
      default: fail("npy: array of ", dtype_name(dtype), " is not an integer array");
    }
  }
  return out;
}

NpyArray parse_npy(std::string_view s, const std::string& path) {
  if (s.size() < 10 || std::memcmp(s.data(), "\x93NUMPY", 6) != 0) fail(path, ": not a .npy file");
  int major = uint8_t(s[6]);
  size_t hlen, off;
  if (major == 1) {
    hlen = uint8_t(s[8]) | (size_t(uint8_t(s[9])) << 8);
    off = 10;
  } else if (major == 2 || major == 3) {
    if (s.size() < 12) fail(path, ": truncated .npy header");
    uint32_t h;
    std::memcpy(&h, s.data() + 8, 4);
    hlen = h;
    off = 12;
  } else {
    fail(path, ": unsupported .npy version ", major);
  }
  if (hlen > s.size() - off) fail(path, ": truncated .npy header");
  std::string header(s.substr(off, hlen));
  // The header is a Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
  auto value_after = [&](const char* key) -> size_t {
    size_t k = header.find(key);
    if (k == std::string::npos) fail(path, ": .npy header has no ", key);
    size_t colon = header.find(':', k);
    if (colon == std::string::npos) fail(path, ": malformed .npy header");
    size_t v = header.find_first_not_of(" ", colon + 1);
    if (v == std::string::npos) fail(path, ": malformed .npy header");
    return v;
  };
  size_t d = value_after("'descr'");
  size_t d_end = header.find('\'', d + 1);
  if (header[d] != '\'' || d_end == std::string::npos || d_end - d < 4) fail(path, ": malformed .npy descr");
  std::string descr = header.substr(d + 1, d_end - d - 1);
  if (descr[0] == '>') fail(path, ": big-endian .npy is not supported");
  std::string code = descr.substr(1);
  NpyArray a;
  if (code == "f4") a.dtype = DType::F32;
  else if (code == "f2") a.dtype = DType::F16;
  else if (code == "f8") a.dtype = DType::F64;
  else if (code == "i4") a.dtype = DType::I32;
  else if (code == "i8") a.dtype = DType::I64;
  else if (code == "i2") a.dtype = DType::I16;
  else if (code == "u1") a.dtype = DType::U8;
  else if (code == "i1") a.dtype = DType::I8;
  else fail(path, ": unsupported .npy dtype '", descr, "'");
  if (header.compare(value_after("'fortran_order'"), 4, "True") == 0) fail(path, ": Fortran-order .npy is not supported");
  size_t sh = value_after("'shape'");
  size_t sh_end = header.find(')', sh);
  if (header[sh] != '(' || sh_end == std::string::npos) fail(path, ": malformed .npy shape");
  std::string dims = header.substr(sh + 1, sh_end - sh - 1);
  // Every dimension and the product of the non-zero ones stay <= 2^48, so numel() and the byte
  // count cannot overflow whatever the order of the dimensions.
  uint64_t nonzero = 1;
  bool empty = false;
  for (size_t i = 0; i < dims.size();) {
    if (dims[i] >= '0' && dims[i] <= '9') {
      uint64_t v = 0;
      for (; i < dims.size() && dims[i] >= '0' && dims[i] <= '9'; ++i) {
        v = v * 10 + uint64_t(dims[i] - '0');
        if (v > kMaxElements) fail(path, ": .npy shape has a dimension above 2^48");
      }
      if (v && nonzero > kMaxElements / v) fail(path, ": .npy shape has more than 2^48 elements");
      if (a.shape.size() >= kMaxRank) fail(path, ": .npy shape has more than ", kMaxRank, " dimensions");
      if (v) nonzero *= v;
      else empty = true;
      a.shape.push_back(int64_t(v));
    } else if (dims[i] == ',' || dims[i] == ' ') {
      ++i;
    } else {
      fail(path, ": malformed .npy shape");
    }
  }
  const uint64_t want = (empty ? 0 : nonzero) * dtype_size(a.dtype);
  const size_t data_off = off + hlen;
  if (s.size() - data_off != want)
    fail(path, ": .npy data is ", s.size() - data_off, " bytes, expected ", want, " for shape ", shape_str(a.shape));
  a.bytes.assign(s.begin() + long(data_off), s.end());
  return a;
}

NpyArray read_npy(const std::string& path) { return parse_npy(read_text_file(path), path); }

void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& shape, const void* data) {
  const char* descr = nullptr;
  switch (dtype) {
    case DType::F32: descr = "<f4"; break;
    case DType::F16: descr = "<f2"; break;
    case DType::F64: descr = "<f8"; break;
    case DType::I32: descr = "<i4"; break;
    case DType::I64: descr = "<i8"; break;
    default: fail(path, ": cannot write ", dtype_name(dtype), " as .npy");
  }
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string h = cat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (", dims, "), }");
  while ((10 + h.size() + 1) % 64) h.push_back(' ');
  h.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(1);
  out.push_back(0);
  out.push_back(char(h.size() & 0xFF));
  out.push_back(char(h.size() >> 8));
  out += h;
  size_t n = dtype_size(dtype);
  for (auto d : shape) n *= size_t(d);
  out.append(static_cast<const char*>(data), n);
  write_file_atomic(path, out);
}

}  // namespace metharme
