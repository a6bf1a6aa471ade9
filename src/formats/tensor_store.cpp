#include "formats/tensor_store.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/safetensors.h"
#include "formats/torch_checkpoint.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

namespace metharme {

namespace fs = std::filesystem;
using json = nlohmann::json;

void TensorStore::add(TensorView t) {
  auto [it, inserted] = tensors_.emplace(t.name, t);
  if (!inserted)
    fail("tensor '", t.name, "' appears twice: in ", it->second.source, " and in ", t.source);
}

const TensorView* TensorStore::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& TensorStore::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) fail("missing tensor '", name, "'", files_.empty() ? "" : cat(" (looked in ", files_.front(),
                                                                        files_.size() > 1 ? " and other shards" : "", ")"));
  return *t;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> v;
  for (const auto& [k, _] : tensors_) v.push_back(k);
  return v;
}

void add_safetensors_file(TensorStore& store, const std::string& path) {
  auto f = std::make_shared<SafetensorsFile>(path);
  for (const auto& t : f->tensors()) store.add(t);
  store.add_metadata(f->metadata());
  store.add_file(path);
  store.keep(f);
}

namespace {

void open_safetensors_index(TensorStore& store, const fs::path& dir, const fs::path& index_path) {
  const json idx = parse_json(read_text_file(index_path.string()), index_path.string());
  if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
    fail(index_path.string(), ": no 'weight_map' object");
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
    if (!it.value().is_string()) fail(index_path.string(), ": weight_map entry '", it.key(), "' is not a file name");
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      fail(index_path.string(), ": shard name '", shard, "' must be a plain file name");
    by_shard[shard].push_back(it.key());
  }
  for (const auto& [shard, names] : by_shard) {
    fs::path p = dir / shard;
    if (!fs::exists(p)) fail(index_path.string(), ": names shard '", shard, "', which is not in the folder");
    auto f = std::make_shared<SafetensorsFile>(p.string());
    for (const auto& name : names) {
      const TensorView* t = f->find(name);
      if (!t) fail(p.string(), ": tensor '", name, "' is assigned to this shard by the index but is not in it");
      store.add(*t);
    }
    store.add_metadata(f->metadata());
    store.add_file(p.string());
    store.keep(f);
  }
}

}  // namespace

TensorStore TensorStore::open_folder(const std::string& dir_str) {
  fs::path dir(dir_str);
  if (!fs::exists(dir)) fail(dir_str, ": model folder does not exist");
  if (!fs::is_directory(dir)) fail(dir_str, ": is not a folder");
  TensorStore store;
  fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    open_safetensors_index(store, dir, index);
    return store;
  }
  std::vector<fs::path> st_files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") st_files.push_back(e.path());
  std::sort(st_files.begin(), st_files.end());
  if (!st_files.empty()) {
    for (const auto& p : st_files) add_safetensors_file(store, p.string());
    return store;
  }
  if (open_torch_folder(store, dir_str)) return store;
  fail(dir_str, ": no weights found (expected *.safetensors, model.safetensors.index.json, "
                "pytorch_model*.bin or *.pt)");
}

}  // namespace metharme
