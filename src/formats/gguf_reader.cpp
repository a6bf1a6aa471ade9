#include "formats/gguf_reader.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "util/error.h"

namespace metharme {

namespace {

constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;

size_t type_size(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    case GgufType::kStr:
    case GgufType::kArr:
      return 0;
  }
  return 0;
}

// A bounds-checked cursor over the mapped file. `what` names the field being read for errors.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }
  const uint8_t* here() const { return p_ + pos_; }

  const uint8_t* take(size_t bytes, const std::string& what) {
    if (bytes > left())
      fail(path_, ": GGUF truncated: ", what, " needs ", bytes, " bytes at offset ", pos_, ", ", left(), " left");
    const uint8_t* r = p_ + pos_;
    pos_ += bytes;
    return r;
  }
  template <class T>
  T read(const std::string& what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }
  std::string_view str(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " length");
    if (len > left()) fail(path_, ": GGUF ", what, " has length ", len, " but only ", left(), " bytes remain");
    return {reinterpret_cast<const char*>(take(size_t(len), what)), size_t(len)};
  }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const std::string& path_;
};

GgufType value_type(uint32_t raw, const std::string& path, const std::string& key) {
  if (raw > uint32_t(GgufType::kF64)) fail(path, ": metadata '", key, "' has unknown value type ", raw);
  return GgufType(raw);
}

void read_scalar(Cursor& c, GgufValue& v, const std::string& path, const std::string& key) {
  const std::string what = cat("metadata '", key, "'");
  switch (v.type) {
    case GgufType::kU8:
      v.u = c.read<uint8_t>(what);
      break;
    case GgufType::kI8:
      v.i = c.read<int8_t>(what);
      break;
    case GgufType::kU16:
      v.u = c.read<uint16_t>(what);
      break;
    case GgufType::kI16:
      v.i = c.read<int16_t>(what);
      break;
    case GgufType::kU32:
      v.u = c.read<uint32_t>(what);
      break;
    case GgufType::kI32:
      v.i = c.read<int32_t>(what);
      break;
    case GgufType::kU64:
      v.u = c.read<uint64_t>(what);
      break;
    case GgufType::kI64:
      v.i = c.read<int64_t>(what);
      break;
    case GgufType::kF32:
      v.f = c.read<float>(what);
      break;
    case GgufType::kF64:
      v.f = c.read<double>(what);
      break;
    case GgufType::kBool:
      v.u = c.read<uint8_t>(what);
      break;
    case GgufType::kStr:
      v.str = c.str(what);
      break;
    case GgufType::kArr:
      break;
  }
  if (v.type == GgufType::kBool && v.u > 1) fail(path, ": metadata '", key, "': bool value ", v.u, " is not 0 or 1");
}

// Skips an array's elements (nested arrays are walked to find their end).
void skip_array(Cursor& c, const std::string& path, const std::string& key, int depth) {
  if (depth > kMaxArrayDepth) fail(path, ": metadata '", key, "' nests arrays deeper than ", kMaxArrayDepth);
  const GgufType et = value_type(c.read<uint32_t>("array type of '" + key + "'"), path, key);
  const uint64_t n = c.read<uint64_t>("array count of '" + key + "'");
  if (et == GgufType::kStr || et == GgufType::kArr) {
    if (n > c.left() / 8) fail(path, ": metadata '", key, "' claims ", n, " elements, more than the file holds");
    for (uint64_t k = 0; k < n; ++k) {
      if (et == GgufType::kStr)
        c.str(cat("metadata '", key, "' element ", k));
      else
        skip_array(c, path, key, depth + 1);
    }
  } else {
    const size_t es = type_size(et);
    if (n > c.left() / es) fail(path, ": metadata '", key, "' claims ", n, " elements, more than the file holds");
    c.take(size_t(n) * es, "metadata '" + key + "'");
  }
}

void read_array(Cursor& c, GgufValue& v, const std::string& path, const std::string& key) {
  v.elem = value_type(c.read<uint32_t>("array type of '" + key + "'"), path, key);
  v.count = c.read<uint64_t>("array count of '" + key + "'");
  const std::string what = cat("metadata '", key, "'");
  if (v.elem == GgufType::kStr || v.elem == GgufType::kArr) {
    // Every element takes at least 8 bytes (a length or a type+count), so this bounds the count.
    if (v.count > c.left() / 8) fail(path, ": ", what, " claims ", v.count, " elements, more than the file holds");
    v.data = c.here();
    if (v.elem == GgufType::kStr) v.strs.reserve(size_t(v.count));
    for (uint64_t k = 0; k < v.count; ++k) {
      if (v.elem == GgufType::kStr)
        v.strs.push_back(c.str(cat(what, " element ", k)));
      else
        skip_array(c, path, key, 1);
    }
    return;
  }
  const size_t es = type_size(v.elem);
  if (v.count > c.left() / es) fail(path, ": ", what, " claims ", v.count, " elements, more than the file holds");
  v.data = c.take(size_t(v.count) * es, what);
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* const names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                      "bool", "string", "array", "u64", "i64", "f64"};
  return uint32_t(t) <= uint32_t(GgufType::kF64) ? names[uint32_t(t)] : "unknown";
}

bool GgufValue::is_int() const {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64:
      return true;
    default:
      return false;
  }
}

bool GgufValue::is_float() const { return type == GgufType::kF32 || type == GgufType::kF64; }

bool is_gguf_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return f.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

GgufFile::GgufFile(const std::string& path) : file_(path) {
  Cursor c(file_.data(), file_.size(), file_.path());
  const uint8_t* magic = c.take(4, "magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) fail(path, ": not a GGUF file (bad magic)");
  version_ = c.read<uint32_t>("version");
  if (version_ != 0 && (version_ & 0xFFFF) == 0) fail(path, ": big-endian GGUF files are not supported");
  if (version_ == 1) fail(path, ": GGUF version 1 is not supported (only 2 and 3); re-convert the model");
  if (version_ != 2 && version_ != 3) fail(path, ": GGUF version ", version_, " is not supported (only 2 and 3)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // A key/value takes at least 12 bytes (key length + type), a tensor info at least 24.
  if (n_kv > c.left() / 12) fail(path, ": GGUF metadata count ", n_kv, " exceeds what the file can hold");
  if (n_tensors > c.left() / 24) fail(path, ": GGUF tensor count ", n_tensors, " exceeds what the file can hold");
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key(c.str(cat("metadata key ", k)));
    GgufValue v;
    v.type = value_type(c.read<uint32_t>("value type of '" + key + "'"), path, key);
    if (v.type == GgufType::kArr) {
      read_array(c, v, path, key);
    } else {
      read_scalar(c, v, path, key);
    }
    if (kv_.count(key)) fail(path, ": metadata key '", key, "' appears twice");
    kv_.emplace(std::move(key), std::move(v));
  }
  if (const GgufValue* a = find("general.alignment")) {
    if (!a->is_int() || a->u == 0 || (a->u & (a->u - 1)) != 0 || a->u > 65536)
      fail(path, ": general.alignment must be a power of two up to 65536");
    alignment_ = a->u;
  }
  tensors_.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = std::string(c.str(cat("tensor ", k, " name")));
    const std::string what = cat("tensor '", t.name, "'");
    const uint32_t nd = c.read<uint32_t>(what + " n_dims");
    if (nd < 1 || nd > kMaxDims) fail(path, ": ", what, " has ", nd, " dimensions (1 to ", kMaxDims, " allowed)");
    t.numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t v = c.read<uint64_t>(what + " dims");
      if (v == 0 || v > uint64_t(std::numeric_limits<int64_t>::max()) / uint64_t(t.numel))
        fail(path, ": ", what, " dimension ", d, " = ", v, " is zero or makes the tensor too large");
      t.dims.push_back(int64_t(v));
      t.numel *= int64_t(v);
    }
    const uint32_t ty = c.read<uint32_t>(what + " type");
    if (!ggml_type_supported(ty))
      fail(path, ": ", what, " has ggml type ", ggml_type_name(ty),
           ", which metharme does not support (supported: F32, "
           "F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)");
    t.type = GgmlType(ty);
    const int64_t be = ggml_block_elems(t.type);
    if (t.dims[0] % be != 0)
      fail(path, ": ", what, " row length ", t.dims[0], " is not a multiple of the ", ggml_type_name(ty), " block (",
           be, ")");
    const uint64_t blocks = uint64_t(t.numel / be), bb = ggml_block_bytes(t.type);
    if (blocks > std::numeric_limits<size_t>::max() / bb) fail(path, ": ", what, " is too large");
    t.nbytes = size_t(blocks * bb);
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0)
      fail(path, ": ", what, " data offset ", t.offset, " is not a multiple of the alignment ", alignment_);
    if (tensor_index_.count(t.name)) fail(path, ": tensor '", t.name, "' appears twice");
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  const size_t pad = (alignment_ - c.pos() % alignment_) % alignment_;
  data_offset_ = c.pos() + pad;
  if (!tensors_.empty() && data_offset_ > file_.size()) fail(path, ": GGUF truncated before the tensor data");
  const size_t data_bytes = file_.size() - std::min(data_offset_, file_.size());
  for (GgufTensorInfo& t : tensors_) {
    if (t.offset > data_bytes || t.nbytes > data_bytes - t.offset)
      fail(path, ": tensor '", t.name, "' data [", t.offset, ", +", t.nbytes, ") lies past the end of the file (",
           data_bytes, " data bytes)");
    t.data = file_.data() + data_offset_ + t.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  if (!find(key)) fail(path(), ": missing GGUF metadata '", key, "'");
  return get_uint(key, 0);
}

uint64_t GgufFile::get_uint(const std::string& key, uint64_t def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (!v->is_int()) fail(path(), ": metadata '", key, "' is a ", gguf_type_name(v->type), ", expected an integer");
  if (v->i < 0) fail(path(), ": metadata '", key, "' = ", v->i, " must not be negative");
  return v->i > 0 ? uint64_t(v->i) : v->u;
}

int64_t GgufFile::get_int(const std::string& key, int64_t def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (!v->is_int()) fail(path(), ": metadata '", key, "' is a ", gguf_type_name(v->type), ", expected an integer");
  if (v->u > uint64_t(std::numeric_limits<int64_t>::max()))
    fail(path(), ": metadata '", key, "' = ", v->u, " is too large");
  return v->u ? int64_t(v->u) : v->i;
}

double GgufFile::get_float(const std::string& key, double def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->is_float()) return v->f;
  if (v->is_int()) return v->u ? double(v->u) : double(v->i);
  fail(path(), ": metadata '", key, "' is a ", gguf_type_name(v->type), ", expected a number");
}

bool GgufFile::get_bool(const std::string& key, bool def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type != GgufType::kBool)
    fail(path(), ": metadata '", key, "' is a ", gguf_type_name(v->type), ", expected a bool");
  return v->u != 0;
}

std::string GgufFile::get_str(const std::string& key) const {
  if (!find(key)) fail(path(), ": missing GGUF metadata '", key, "'");
  return get_str(key, "");
}

std::string GgufFile::get_str(const std::string& key, const std::string& def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type != GgufType::kStr)
    fail(path(), ": metadata '", key, "' is a ", gguf_type_name(v->type), ", expected a string");
  return std::string(v->str);
}

namespace {
const GgufValue& array_of(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  if (!v) fail(f.path(), ": missing GGUF metadata '", key, "'");
  if (v->type != GgufType::kArr)
    fail(f.path(), ": metadata '", key, "' is a ", gguf_type_name(v->type), ", expected an array");
  return *v;
}
}  // namespace

std::vector<std::string> GgufFile::get_str_array(const std::string& key) const {
  const GgufValue& v = array_of(*this, key);
  if (v.elem != GgufType::kStr)
    fail(path(), ": metadata '", key, "' is an array of ", gguf_type_name(v.elem), ", expected strings");
  return {v.strs.begin(), v.strs.end()};
}

std::vector<float> GgufFile::get_f32_array(const std::string& key) const {
  const GgufValue& v = array_of(*this, key);
  std::vector<float> out(size_t(v.count));
  if (v.elem == GgufType::kF32) {
    if (v.count) std::memcpy(out.data(), v.data, out.size() * 4);
  } else if (v.elem == GgufType::kF64) {
    for (size_t k = 0; k < out.size(); ++k) {
      double d;
      std::memcpy(&d, v.data + 8 * k, 8);
      out[k] = float(d);
    }
  } else {
    fail(path(), ": metadata '", key, "' is an array of ", gguf_type_name(v.elem), ", expected f32");
  }
  return out;
}

std::vector<int32_t> GgufFile::get_i32_array(const std::string& key) const {
  const GgufValue& v = array_of(*this, key);
  GgufValue probe;
  probe.type = v.elem;
  if (!probe.is_int() && v.elem != GgufType::kBool)
    fail(path(), ": metadata '", key, "' is an array of ", gguf_type_name(v.elem), ", expected integers");
  const size_t es = type_size(v.elem);
  const bool is_signed =
      v.elem == GgufType::kI8 || v.elem == GgufType::kI16 || v.elem == GgufType::kI32 || v.elem == GgufType::kI64;
  std::vector<int32_t> out(size_t(v.count));
  for (size_t k = 0; k < out.size(); ++k) {
    uint64_t raw = 0;
    std::memcpy(&raw, v.data + es * k, es);  // little-endian host
    int64_t x = int64_t(raw);
    if (is_signed && es < 8 && (raw >> (8 * es - 1)) & 1) x = int64_t(raw | (~uint64_t(0) << (8 * es)));
    if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max() ||
        (!is_signed && es == 8 && raw > uint64_t(std::numeric_limits<int32_t>::max())))
      fail(path(), ": metadata '", key, "' element ", k, " is out of the int32 range");
    out[k] = int32_t(x);
  }
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) fail(path(), ": missing tensor '", name, "'");
  return *t;
}

TensorView GgufFile::view(const GgufTensorInfo& t) const {
  TensorView v;
  v.name = t.name;
  switch (t.type) {
    case GgmlType::kF32:
      v.dtype = DType::F32;
      break;
    case GgmlType::kF16:
      v.dtype = DType::F16;
      break;
    case GgmlType::kBF16:
      v.dtype = DType::BF16;
      break;
    default:
      fail(path(), ": tensor '", t.name, "' is ", ggml_type_name(uint32_t(t.type)), ", not a float type");
  }
  v.shape.assign(t.dims.rbegin(), t.dims.rend());
  v.data = t.data;
  v.nbytes = t.nbytes;
  v.source = path();
  return v;
}

}  // namespace metharme
