// A restricted unpickler for torch.save files. Python's pickle runs arbitrary code (any global can
// be called); this one implements only the opcodes and the globals that state dicts use, builds
// plain values, and refuses everything else with an error that names the global or opcode.
//
// Allowed globals: collections.OrderedDict, torch._utils._rebuild_tensor[_v2],
// torch._utils._rebuild_parameter[_with_state], torch.*Storage types, torch dtypes, torch.Size,
// _codecs.encode (how protocol 2 spells bytes). Storages arrive as persistent ids
// ('storage', StorageType, key, location, numel[, view_metadata]) and become Storage values;
// _rebuild_tensor_v2 becomes a Tensor value. Nothing is ever called.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "formats/tensor.h"

namespace metharme {

struct PyObj {
  enum class Kind : uint8_t {
    None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Set,
    Global,   // an allowed global (s = "module.name", i = which); only callable by REDUCE
    Storage,  // s = key, dtype, numel; view_offset/root_numel for legacy storage views
    Tensor,   // items[0] = Storage; offset, shape, stride (elements)
    Dtype,    // a torch dtype object (dtype)
  };
  Kind kind = Kind::None;
  int64_t i = 0;            // Bool, Int; Global: callable id
  double f = 0;             // Float
  std::string s;            // Str (UTF-8), Bytes, BigInt (little-endian two's complement), Global, Storage key
  std::vector<PyObj*> items;  // Tuple/List/Set elements; Dict: key0, value0, key1, value1, ...
  DType dtype = DType::U8;  // Storage, Tensor, Dtype
  int64_t numel = 0;        // Storage: elements
  int64_t root_numel = 0;   // Storage: elements of the root storage `s` (differs for legacy views)
  int64_t view_offset = 0;  // Storage: first element within the root storage (legacy views)
  int64_t offset = 0;       // Tensor: storage offset in elements
  std::vector<int64_t> shape, stride;  // Tensor
  std::string location;     // Storage: "cpu", "cuda:0", ...

  bool is(Kind k) const { return kind == k; }
  size_t dict_size() const { return items.size() / 2; }
  const PyObj* dict_find(const std::string& key) const;  // string keys only
};

const char* kind_name(PyObj::Kind k);

class Unpickler {
 public:
  // `what` names the stream in errors ("pytorch_model.bin (archive/data.pkl)").
  Unpickler(const uint8_t* data, size_t size, std::string what);
  ~Unpickler();
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  // Runs one pickle from the current position to its STOP opcode and returns its value (owned by
  // this Unpickler). Successive calls read successive pickles (the legacy torch layout).
  const PyObj* load();
  size_t position() const { return pos_; }
  // Every storage the pickles loaded so far referenced, in order of appearance.
  const std::vector<const PyObj*>& storages() const { return storages_; }

 private:
  PyObj* make(PyObj::Kind k);
  PyObj* pop();
  std::vector<PyObj*> pop_mark();
  PyObj* global(const std::string& module, const std::string& name, size_t at);
  PyObj* call(PyObj* fn, PyObj* args, size_t at);
  PyObj* persistent_load(PyObj* pid, size_t at);
  [[noreturn]] void bad(size_t at, const std::string& msg) const;

  const uint8_t* data_;
  size_t size_, pos_ = 0;
  std::string what_;
  std::vector<std::unique_ptr<PyObj>> arena_;
  std::vector<PyObj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyObj*> memo_;
  std::vector<const PyObj*> storages_;
  size_t copied_items_ = 0;  // references copied out of existing lists, over all loads
};

}  // namespace metharme
