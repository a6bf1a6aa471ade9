#include "formats/torch_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "formats/torch_pickle.h"
#include "formats/zip_reader.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace metharme {

namespace {

namespace fs = std::filesystem;
using K = PyObj::Kind;

// torch.save's legacy magic number 0x1950a86a20f9469cfc6c as the bytes of its LONG1 opcode.
constexpr uint8_t kLegacyMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int64_t kLegacyProtocol = 1001;
// A state dict's pickle is a few hundred bytes per tensor; a bigger one is refused before it is
// inflated (a deflated entry may claim ~1000x its compressed size).
constexpr uint64_t kMaxPickleBytes = 256ull << 20;

// Files a training run leaves beside the weights; they are not state dicts of the model.
bool is_trainer_file(const std::string& name) {
  static const std::set<std::string> kNames = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt",
                                               "optimizer.bin", "scheduler.bin"};
  return kNames.count(name) || name.rfind("rng_state", 0) == 0;
}

struct RootStorage {  // the bytes of one storage (all tensors and views of it index into these)
  const uint8_t* data = nullptr;
  DType dtype = DType::U8;
  int64_t numel = 0;
};

// What one file yields: tensor views plus whatever keeps their bytes alive.
struct TorchFile {
  std::vector<TensorView> tensors;
  std::vector<std::shared_ptr<void>> keep;
};

int64_t mul_checked(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(what, ": size overflows 64 bits");
  return r;
}

// The (name, tensor) pairs of a state dict: the top-level dict, or the dict inside a wrapper such
// as {"state_dict": {...}} or {"model": {...}} when the top level holds no tensors.
std::vector<std::pair<std::string, const PyObj*>> state_dict_tensors(const PyObj* root, const std::string& what) {
  std::vector<std::pair<std::string, const PyObj*>> out;
  const PyObj* d = root;
  for (int depth = 0; depth < 3 && d; ++depth) {
    if (!d->is(K::Dict)) fail(what, ": the pickle holds a ", kind_name(d->kind), ", not a state dict");
    for (size_t k = 0; k + 1 < d->items.size(); k += 2)
      if (d->items[k]->is(K::Str) && d->items[k + 1]->is(K::Tensor)) out.emplace_back(d->items[k]->s, d->items[k + 1]);
    if (!out.empty()) return out;
    const PyObj* inner = nullptr;
    for (const char* w : {"state_dict", "model_state_dict", "model", "module"}) {
      const PyObj* v = d->dict_find(w);
      if (v && v->is(K::Dict)) {
        inner = v;
        break;
      }
    }
    d = inner;
  }
  fail(what, ": the state dict holds no tensors");
}

// Checks that every storage referenced with `key` agrees on type and size; returns the first.
std::map<std::string, const PyObj*> storages_by_key(const Unpickler& up, const std::string& path) {
  std::map<std::string, const PyObj*> m;
  for (const PyObj* s : up.storages()) {
    auto [it, fresh] = m.emplace(s->s, s);
    if (!fresh && (it->second->dtype != s->dtype || it->second->root_numel != s->root_numel))
      fail(path, ": storage '", s->s, "' is declared twice with different types or sizes");
  }
  return m;
}

// A tensor view over its root storage; copies when strided, misaligned or not in the mapping.
TensorView make_view(const std::string& name, const PyObj* t, const RootStorage& root, const std::string& path,
                     std::vector<std::shared_ptr<void>>& keep, uint64_t& copy_budget) {
  const PyObj* st = t->items[0];
  const std::string what = cat(path, ": tensor '", name, "'");
  const size_t es = dtype_size(st->dtype);
  TensorView v;
  v.name = name;
  v.dtype = st->dtype;
  v.shape = t->shape;
  v.source = path;
  int64_t n = 1;
  for (int64_t d : t->shape) n = mul_checked(n, d, what);
  v.nbytes = size_t(mul_checked(n, int64_t(es), what));
  const uint8_t* base = root.data + size_t(st->view_offset) * es;
  if (n == 0) {
    v.data = base;
    return v;
  }
  int64_t last = t->offset;
  for (size_t i = 0; i < t->shape.size(); ++i) {
    int64_t step = mul_checked(t->shape[i] - 1, t->stride[i], what);
    if (__builtin_add_overflow(last, step, &last)) fail(what, ": offset overflows 64 bits");
  }
  if (last >= st->numel)
    fail(what, " (shape ", shape_str(t->shape), ", offset ", t->offset, ", stride ", shape_str(t->stride),
         ") reaches element ", last, " of storage '", st->s, "', which holds ", st->numel, " elements");
  if (n > st->numel)  // only overlapping strides (e.g. an expanded tensor) can do this
    fail(what, " has ", n, " elements but its storage only ", st->numel, " (overlapping strides are not supported)");
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t i = t->shape.size(); i-- > 0;) {
    if (t->shape[i] != 1 && t->stride[i] != expect) contiguous = false;
    expect *= t->shape[i];
  }
  const uint8_t* p = base + size_t(t->offset) * es;
  if (contiguous && reinterpret_cast<uintptr_t>(p) % es == 0) {
    v.data = p;
    return v;
  }
  if (v.nbytes > copy_budget)
    fail(what, ": copying the strided or misaligned tensors would take more memory than the storages they view "
               "(", v.nbytes, " bytes over the remaining ", copy_budget, "); the file is corrupt or crafted");
  copy_budget -= v.nbytes;
  auto buf = std::make_shared<std::vector<uint8_t>>(v.nbytes);
  if (contiguous) {
    std::memcpy(buf->data(), p, v.nbytes);
  } else {  // gather row by row (innermost dimension) in row-major order
    const size_t rank = t->shape.size();
    const int64_t inner = t->shape[rank - 1], inner_stride = t->stride[rank - 1];
    std::vector<int64_t> idx(rank, 0);
    uint8_t* out = buf->data();
    for (int64_t row = 0; row < n / inner; ++row) {
      int64_t off = 0;
      for (size_t i = 0; i + 1 < rank; ++i) off += idx[i] * t->stride[i];
      const uint8_t* src = p + size_t(off) * es;
      if (inner_stride == 1) {
        std::memcpy(out, src, size_t(inner) * es);
        out += size_t(inner) * es;
      } else {
        for (int64_t j = 0; j < inner; ++j, out += es) std::memcpy(out, src + size_t(j * inner_stride) * es, es);
      }
      for (size_t i = rank - 1; i-- > 0;) {
        if (++idx[i] < t->shape[i]) break;
        idx[i] = 0;
      }
    }
  }
  v.data = buf->data();
  keep.push_back(buf);
  return v;
}

// Views for every tensor of the state dict. A pickle's memo can reference one tensor object many
// times for a few bytes each, so repeated names are refused and repeated objects share one view,
// both before anything is copied; copies of strided tensors together may take at most twice the
// bytes of the file's storages.
void build_views(TorchFile& f, const PyObj* root, const std::map<std::string, RootStorage>& roots,
                 const std::string& path, const std::string& what) {
  const auto named = state_dict_tensors(root, what);
  std::set<std::string_view> names;
  for (const auto& [name, t] : named)
    if (!names.insert(name).second) fail(what, ": tensor '", name, "' appears more than once in the state dict");
  uint64_t copy_budget = 0;
  for (const auto& [key, r] : roots) copy_budget += 2 * uint64_t(r.numel) * dtype_size(r.dtype);
  std::map<const PyObj*, size_t> first_view;  // tensor object -> index of its view in f.tensors
  for (const auto& [name, t] : named) {
    auto [it, fresh] = first_view.emplace(t, f.tensors.size());
    if (!fresh) {
      TensorView v = f.tensors[it->second];
      v.name = name;
      f.tensors.push_back(std::move(v));
      continue;
    }
    f.tensors.push_back(make_view(name, t, roots.at(t->items[0]->s), path, f.keep, copy_budget));
  }
}

TorchFile read_zip(const std::string& path) {
  TorchFile f;
  auto zip = std::make_shared<ZipReader>(path);
  f.keep.push_back(zip);
  const ZipEntry* pkl = nullptr;
  for (const auto& e : zip->entries()) {
    if (e.name == "data.pkl" || (e.name.size() > 9 && e.name.ends_with("/data.pkl") &&
                                 e.name.find('/') == e.name.size() - 9)) {
      pkl = &e;
      break;
    }
  }
  if (!pkl) fail(path, ": zip archive has no data.pkl, so it is not a torch.save checkpoint");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);  // "archive/"
  if (const ZipEntry* bo = zip->find(prefix + "byteorder")) {
    if (bo->size > 16) fail(path, ": entry '", bo->name, "' is ", bo->size, " bytes (expected \"little\" or \"big\")");
    std::vector<uint8_t> b;
    zip->extract(*bo, b);
    if (std::string(b.begin(), b.end()) != "little") fail(path, ": big-endian checkpoints are not supported");
  }
  if (pkl->size > kMaxPickleBytes)
    fail(path, ": ", pkl->name, " is ", pkl->size, " bytes, more than any state dict needs (limit ", kMaxPickleBytes, ")");
  std::vector<uint8_t> bytes;
  zip->extract(*pkl, bytes);
  const std::string what = cat(path, " (", pkl->name, ")");
  Unpickler up(bytes.data(), bytes.size(), what);
  const PyObj* root = up.load();

  std::map<std::string, RootStorage> roots;
  for (const auto& [key, s] : storages_by_key(up, path)) {
    const std::string entry = prefix + "data/" + key;
    const ZipEntry* e = zip->find(entry);
    if (!e) fail(path, ": the pickle references storage '", key, "', but the archive has no entry '", entry, "'");
    uint64_t want = uint64_t(mul_checked(s->root_numel, int64_t(dtype_size(s->dtype)), path));
    if (e->size != want)
      fail(path, ": storage '", key, "' (", entry, ") holds ", e->size, " bytes, but the pickle declares ", s->root_numel,
           " elements of ", dtype_name(s->dtype), " (", want, " bytes)");
    RootStorage r{nullptr, s->dtype, s->root_numel};
    if (e->method == 0) {
      r.data = zip->stored_data(*e);
    } else {
      auto buf = std::make_shared<std::vector<uint8_t>>();
      zip->extract(*e, *buf);
      r.data = buf->data();
      f.keep.push_back(buf);
    }
    roots[key] = r;
  }
  build_views(f, root, roots, path, what);
  return f;
}

TorchFile read_legacy(const std::string& path) {
  TorchFile f;
  auto file = std::make_shared<MappedFile>(path);
  f.keep.push_back(file);
  Unpickler up(file->data(), file->size(), path);
  const PyObj* magic = up.load();
  if (!magic->is(K::BigInt) || magic->s != std::string(reinterpret_cast<const char*>(kLegacyMagic), sizeof kLegacyMagic))
    fail(path, ": not a PyTorch checkpoint (the legacy torch.save magic number is missing)");
  const PyObj* proto = up.load();
  if (!proto->is(K::Int) || proto->i != kLegacyProtocol)
    fail(path, ": unsupported legacy torch.save protocol version (expected ", kLegacyProtocol, ")");
  const PyObj* info = up.load();
  if (const PyObj* le = info->is(K::Dict) ? info->dict_find("little_endian") : nullptr; le && le->is(K::Bool) && !le->i)
    fail(path, ": big-endian checkpoints are not supported");
  const PyObj* root = up.load();
  const PyObj* keys = up.load();
  if (!keys->is(K::List)) fail(path, ": the list of storage keys after the state dict is missing");
  auto declared = storages_by_key(up, path);

  std::map<std::string, RootStorage> roots;
  const uint8_t* d = file->data();
  const uint64_t size = file->size();
  uint64_t pos = up.position();
  for (const PyObj* k : keys->items) {
    if (!k->is(K::Str)) fail(path, ": storage key list holds a ", kind_name(k->kind));
    auto it = declared.find(k->s);
    if (it == declared.end()) fail(path, ": storage '", k->s, "' is stored but no tensor declares its type");
    const PyObj* s = it->second;
    if (size - pos < 8) fail(path, ": storage '", k->s, "' is missing (the file is truncated)");
    int64_t numel;
    std::memcpy(&numel, d + pos, 8);
    pos += 8;
    if (numel != s->root_numel)
      fail(path, ": storage '", k->s, "' holds ", numel, " elements, but the pickle declares ", s->root_numel);
    uint64_t nbytes = uint64_t(mul_checked(numel, int64_t(dtype_size(s->dtype)), path));
    if (nbytes > size - pos)
      fail(path, ": storage '", k->s, "' (", nbytes, " bytes at offset ", pos, ") runs past the end of the file (truncated?)");
    roots[k->s] = RootStorage{d + pos, s->dtype, numel};
    pos += nbytes;
  }
  for (const auto& [key, s] : declared)
    if (!roots.count(key)) fail(path, ": the pickle references storage '", key, "', which the file does not contain");
  build_views(f, root, roots, path, path);
  return f;
}

TorchFile read_torch_file(const std::string& path) {
  uint8_t head[8] = {};
  {
    MappedFile m(path);
    if (m.size() == 0) fail(path, ": file is empty");
    std::memcpy(head, m.data(), std::min<size_t>(m.size(), 8));
    if (ZipReader::looks_like_zip(m.data(), m.size())) return read_zip(path);
  }
  if (head[0] == 0x80 && head[2] == 0x8a) return read_legacy(path);  // PROTO n, LONG1 (the magic)
  fail(path, ": not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy torch.save file)");
}

void add_all(TensorStore& store, TorchFile&& f, const std::string& path) {
  for (auto& t : f.tensors) store.add(std::move(t));
  for (auto& k : f.keep) store.keep(std::move(k));
  store.add_file(path);
}

void open_torch_index(TensorStore& store, const fs::path& dir, const fs::path& index) {
  const nlohmann::json idx = parse_json(read_text_file(index.string()), index.string());
  if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
    fail(index.string(), ": no 'weight_map' object");
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
    if (!it.value().is_string()) fail(index.string(), ": weight_map entry '", it.key(), "' is not a file name");
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      fail(index.string(), ": shard name '", shard, "' must be a plain file name");
    by_shard[shard].push_back(it.key());
  }
  if (by_shard.empty()) fail(index.string(), ": weight_map is empty");
  for (const auto& [shard, names] : by_shard) {
    const std::string p = (dir / shard).string();
    if (!fs::exists(p)) fail(index.string(), ": names shard '", shard, "', which is not in the folder");
    TorchFile f = read_torch_file(p);
    std::map<std::string, TensorView*> have;
    for (auto& t : f.tensors) have[t.name] = &t;
    for (const auto& name : names) {
      auto it = have.find(name);
      if (it == have.end()) fail(p, ": tensor '", name, "' is assigned to this shard by the index but is not in it");
      store.add(*it->second);
    }
    for (auto& k : f.keep) store.keep(std::move(k));
    store.add_file(p);
  }
}

}  // namespace

void add_torch_file(TensorStore& store, const std::string& path) { add_all(store, read_torch_file(path), path); }

bool open_torch_folder(TensorStore& store, const std::string& dir_str) {
  const fs::path dir(dir_str);
  const fs::path index = dir / "pytorch_model.bin.index.json";
  if (fs::exists(index)) {
    open_torch_index(store, dir, index);
    return true;
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto ext = e.path().extension();
    if (e.is_regular_file() && (ext == ".bin" || ext == ".pt" || ext == ".pth") &&
        !is_trainer_file(e.path().filename().string()))
      files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& p : files) add_torch_file(store, p.string());
  return !files.empty();
}

}  // namespace metharme
