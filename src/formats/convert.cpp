#include "formats/convert.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "formats/safetensors.h"
#include "formats/tensor_store.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/half.h"
#include "util/progress.h"
#include "util/staging_dir.h"

namespace metharme {

namespace {

namespace fs = std::filesystem;

constexpr size_t kChunkElems = 1 << 20;  // conversion block; bounds the scratch memory

bool is_weight_file(const fs::path& p) {
  const std::string name = p.filename().string(), ext = p.extension().string();
  return ext == ".safetensors" || ext == ".bin" || ext == ".pt" || ext == ".pth" ||
         name == "model.safetensors.index.json" || name == "pytorch_model.bin.index.json";
}

bool is_gptq_tensor(const std::string& name) {
  for (const char* s : {".qweight", ".qzeros", ".scales", ".g_idx", ".zeros"})
    if (name.ends_with(s)) return true;
  return false;
}

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    default: return "float32";
  }
}

float ld_f32(const uint8_t* p, size_t i) {
  float f;
  std::memcpy(&f, p + i * 4, 4);
  return f;
}
float ld_f64(const uint8_t* p, size_t i) {
  double d;
  std::memcpy(&d, p + i * 8, 8);
  return float(d);
}
float ld_f16(const uint8_t* p, size_t i) {
  uint16_t h;
  std::memcpy(&h, p + i * 2, 2);
  return fp16_to_f32(h);
}
float ld_bf16(const uint8_t* p, size_t i) {
  uint16_t h;
  std::memcpy(&h, p + i * 2, 2);
  return bf16_to_f32(h);
}

// One loop per (source, target) pair, so the type switch runs once per block, not per element.
template <float (*Load)(const uint8_t*, size_t)>
void convert_from(const uint8_t* src, uint8_t* dst, DType to, size_t n) {
  if (to == DType::F32) {
    for (size_t i = 0; i < n; ++i) {
      float f = Load(src, i);
      std::memcpy(dst + i * 4, &f, 4);
    }
  } else if (to == DType::F16) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = f32_to_fp16(Load(src, i));
      std::memcpy(dst + i * 2, &h, 2);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = f32_to_bf16(Load(src, i));
      std::memcpy(dst + i * 2, &h, 2);
    }
  }
}

// Converts n elements of float type `from` to `to` (F32, F16 or BF16), rounding to nearest even.
void convert_block(const uint8_t* src, DType from, uint8_t* dst, DType to, size_t n) {
  switch (from) {
    case DType::F32: return convert_from<ld_f32>(src, dst, to, n);
    case DType::F64: return convert_from<ld_f64>(src, dst, to, n);
    case DType::F16: return convert_from<ld_f16>(src, dst, to, n);
    default: return convert_from<ld_bf16>(src, dst, to, n);
  }
}

struct Planned {
  const TensorView* t;
  DType out;
  size_t bytes;
};

}  // namespace

bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(uint8_t(a[i])) && std::isdigit(uint8_t(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(uint8_t(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(uint8_t(b[j2]))) ++j2;
      std::string_view na(a.data() + i, i2 - i), nb(b.data() + j, j2 - j);
      while (na.size() > 1 && na[0] == '0') na.remove_prefix(1);
      while (nb.size() > 1 && nb[0] == '0') nb.remove_prefix(1);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  if (i == a.size() && j == b.size()) return a < b;  // equal up to leading zeros
  return i == a.size();
}

ConvertResult convert_to_safetensors(const std::string& in_dir, const std::string& out_dir, const ConvertOptions& opt) {
  if (opt.dtype && *opt.dtype != DType::F16 && *opt.dtype != DType::BF16 && *opt.dtype != DType::F32)
    fail("convert: target dtype must be f16, bf16 or f32");
  if (opt.max_shard_bytes == 0) fail("convert: shard size must be positive");
  TensorStore store = TensorStore::open_folder(in_dir);
  StagingDir out(out_dir, opt.force, {in_dir});
  ConvertResult res;

  std::vector<std::string> names = store.names();
  std::sort(names.begin(), names.end(), natural_less);
  std::vector<Planned> plan;
  for (const auto& n : names) {
    const TensorView& t = store.get(n);
    DType to = t.dtype;
    if (opt.dtype && dtype_is_float(t.dtype) && !is_gptq_tensor(n)) to = *opt.dtype;
    if (to != t.dtype) ++res.converted;
    plan.push_back({&t, to, size_t(t.numel()) * dtype_size(to)});
    res.bytes += plan.back().bytes;
  }
  // Greedy sharding in name order; a tensor bigger than the limit gets a shard of its own.
  std::vector<std::vector<const Planned*>> shards(1);
  uint64_t in_shard = 0;
  for (const auto& p : plan) {
    if (!shards.back().empty() && in_shard + p.bytes > opt.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&p);
    in_shard += p.bytes;
  }
  res.tensors = plan.size();
  res.shards = shards.size();

  const int64_t total_mb = int64_t((res.bytes + (1 << 20) - 1) >> 20);
  Progress prog("convert", total_mb, "MB", opt.progress);
  uint64_t done = 0;
  std::vector<uint8_t> scratch;
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    char shard_name[64];
    std::snprintf(shard_name, sizeof shard_name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    const std::string file = shards.size() == 1 ? "model.safetensors" : shard_name;
    SafetensorsWriter w(out / file);
    w.set_metadata("format", "pt");
    for (const Planned* p : shards[s]) w.declare(p->t->name, p->out, p->t->shape);
    for (const Planned* p : shards[s]) {
      const TensorView& t = *p->t;
      weight_map[t.name] = file;
      const size_t n = size_t(t.numel()), in_es = dtype_size(t.dtype), out_es = dtype_size(p->out);
      if (n == 0) continue;  // no bytes; the header already describes it
      for (size_t i = 0; i < n; i += kChunkElems) {
        size_t m = std::min(kChunkElems, n - i);
        if (p->out == t.dtype) {
          w.write(t.data + i * in_es, m * in_es);
        } else {
          scratch.resize(m * out_es);
          convert_block(t.data + i * in_es, t.dtype, scratch.data(), p->out, m);
          w.write(scratch.data(), m * out_es);
        }
        done += m * out_es;
        prog.update(int64_t(double(done) / double(res.bytes) * double(total_mb)), t.name);
      }
    }
    w.commit();
    res.files.push_back(file);
  }
  if (shards.size() > 1) {
    nlohmann::json idx = {{"metadata", {{"total_size", res.bytes}}}, {"weight_map", weight_map}};
    write_file_atomic(out / "model.safetensors.index.json", idx.dump(2) + "\n");
    res.files.push_back("model.safetensors.index.json");
  }
  prog.finish();

  // Everything beside the weights travels along (config, tokenizer, generation settings, ...).
  for (const auto& e : fs::directory_iterator(in_dir)) {
    if (!e.is_regular_file() || is_weight_file(e.path())) continue;
    const std::string name = e.path().filename().string();
    if (name == "config.json" && opt.dtype) {
      nlohmann::ordered_json cfg = parse_ordered_json(read_text_file(e.path().string()), e.path().string());
      if (cfg.is_object()) cfg["torch_dtype"] = torch_dtype_name(*opt.dtype);
      write_file_atomic(out / name, cfg.dump(2) + "\n");
    } else {
      std::error_code ec;
      fs::copy_file(e.path(), out / name, ec);
      if (!ec) fs::permissions(out / name, fs::perms::owner_write, fs::perm_options::add, ec);  // inputs may be read-only
      if (ec) fail(e.path().string(), ": cannot copy to ", out.path(), ": ", ec.message());
    }
    res.files.push_back(name);
  }
  out.commit();
  return res;
}

}  // namespace metharme
