#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/json.h"

namespace metharme {

using json = nlohmann::json;

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;  // real headers are < 1 MB; refuse absurd sizes
constexpr uint64_t kMaxElements = 1ull << 48;  // per tensor; with dtype sizes <= 8, bytes fit in 2^51
constexpr size_t kMaxRank = 16;
}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const size_t size = file_.size();
  if (size < 8) fail(path, ": not a safetensors file (", size, " bytes, need at least 8)");
  uint64_t n = 0;
  std::memcpy(&n, file_.data(), 8);
  if (n > kMaxHeader) fail(path, ": header length ", n, " is implausible (corrupt file?)");
  if (n > size - 8) fail(path, ": header length ", n, " runs past the end of the file (", size, " bytes)");
  const json header =
      parse_json(std::string_view(reinterpret_cast<const char*>(file_.data()) + 8, size_t(n)), path + " (header)");
  if (!header.is_object()) fail(path, ": header is not a JSON object");
  const uint8_t* base = file_.data() + 8 + n;
  const size_t data_size = size - 8 - n;
  struct Span {
    uint64_t begin, end;
    size_t index;  // in tensors_
    bool operator<(const Span& o) const { return begin != o.begin ? begin < o.begin : end < o.end; }
  };
  std::vector<Span> spans;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) fail(path, ": __metadata__ is not an object");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string()) fail(path, ": __metadata__ value '", m.key(), "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) { fail(path, ": tensor '", name, "': ", why); };
    if (!e.is_object()) bad("entry is not an object");
    if (!e.contains("dtype") || !e["dtype"].is_string()) bad("missing or non-string 'dtype'");
    if (!e.contains("shape") || !e["shape"].is_array()) bad("missing or non-array 'shape'");
    if (!e.contains("data_offsets") || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2)
      bad("'data_offsets' must be [begin, end]");
    TensorView t;
    t.name = name;
    t.source = path;
    std::string dt = e["dtype"].get<std::string>();
    if (!dtype_from_name(dt, &t.dtype)) bad("unsupported dtype '" + dt + "'");
    if (e["shape"].size() > kMaxRank) bad(cat("shape has more than ", kMaxRank, " dimensions"));
    // The product of the non-zero dimensions is bounded, so every partial product of the shape
    // (numel() in any order) fits in int64 even when a zero dimension makes the tensor empty.
    uint64_t nonzero = 1;
    bool empty = false;
    for (const json& d : e["shape"]) {
      if (!d.is_number_unsigned()) bad("shape has a non-integer or negative dimension");
      const uint64_t v = d.get<uint64_t>();
      if (v > kMaxElements || (v && nonzero > kMaxElements / v))
        bad(cat("shape ", e["shape"].dump(), " has more than 2^48 elements (corrupt header?)"));
      t.shape.push_back(int64_t(v));
      if (v)
        nonzero *= v;
      else
        empty = true;
    }
    const uint64_t numel = empty ? 0 : nonzero;
    const json& off = e["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) bad("data_offsets must be non-negative integers");
    uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (b > en) bad(cat("data_offsets [", b, ", ", en, "] are reversed"));
    if (en > data_size)
      bad(cat("data_offsets [", b, ", ", en, "] run past the end of the data (", data_size, " bytes)"));
    uint64_t want = numel * dtype_size(t.dtype);
    if (en - b != want)
      bad(cat("byte size ", en - b, " does not match dtype ", dt, " x shape ", shape_str(t.shape), " = ", want));
    spans.push_back({b, en, tensors_.size()});
    t.data = base + b;
    t.nbytes = size_t(want);
    // Readers access elements in place (int32 g_idx, fp16 scales, ...): a tensor not aligned to
    // its element size (an odd header length, or odd-sized tensors before it) is copied once.
    if (t.nbytes && reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
      aligned_copies_.emplace_back((t.nbytes + 7) / 8);
      std::memcpy(aligned_copies_.back().data(), t.data, t.nbytes);
      t.data = reinterpret_cast<const uint8_t*>(aligned_copies_.back().data());
    }
    tensors_.push_back(std::move(t));
  }
  // No two tensors may share bytes (compared by file offset: copies live elsewhere).
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i - 1].end > spans[i].begin)
      fail(path, ": tensors '", tensors_[spans[i - 1].index].name, "' and '", tensors_[spans[i].index].name,
           "' overlap");
  }
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

SafetensorsWriter::SafetensorsWriter(const std::string& path) : out_(path) {}

void SafetensorsWriter::declare(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  MH_CHECK(!header_done_, "safetensors writer: declare('", name, "') after data was written");
  size_t numel = 1;
  for (int64_t d : shape) numel *= size_t(d);
  size_t n = numel * dtype_size(dtype);
  MH_CHECK(index_.emplace(name, decls_.size()).second, "safetensors writer: tensor '", name, "' declared twice");
  decls_.push_back({name, dtype, shape, total_, total_ + n});
  total_ += n;
}

void SafetensorsWriter::emit_header() {
  json h = json::object();
  if (!metadata_.empty()) h["__metadata__"] = metadata_;
  for (const auto& d : decls_)
    h[d.name] = {{"dtype", dtype_name(d.dtype)}, {"shape", d.shape}, {"data_offsets", {d.begin, d.end}}};
  std::string s = h.dump();
  while (s.size() % 8) s.push_back(' ');
  uint64_t n = s.size();
  out_.write(&n, 8);
  out_.write(s);
  header_done_ = true;
}

void SafetensorsWriter::write(const void* data, size_t n) {
  if (!header_done_) emit_header();
  MH_CHECK(written_ + n <= total_, "safetensors writer: more bytes written than declared");
  out_.write(data, n);
  written_ += n;
}

void SafetensorsWriter::write_tensor(const std::string& name, const void* data) {
  auto it = index_.find(name);
  MH_CHECK(it != index_.end(), "safetensors writer: tensor '", name, "' was not declared");
  const Decl& d = decls_[it->second];
  if (!header_done_) emit_header();
  if (d.end == d.begin) return;
  MH_CHECK(written_ == d.begin, "safetensors writer: tensor '", name, "' written out of declaration order");
  write(data, d.end - d.begin);
}

void SafetensorsWriter::commit() {
  if (!header_done_) emit_header();
  MH_CHECK(written_ == total_, "safetensors writer: ", written_, " of ", total_, " bytes written");
  out_.commit();
}

}  // namespace metharme
