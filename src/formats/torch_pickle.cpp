#include "formats/torch_pickle.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "util/error.h"

namespace metharme {

namespace {

using K = PyObj::Kind;

// What an allowed global does when REDUCE calls it (storage types and dtypes are plain values).
enum Callable : int64_t {
  kOrderedDict, kRebuildTensorV2, kRebuildTensor, kRebuildParameter, kRebuildParameterWithState,
  kTorchSize, kCodecsEncode, kStorageType,
};

struct AllowedGlobal {
  std::string_view module, name;
  Callable what;
  DType dtype;  // storage types
};

constexpr AllowedGlobal kGlobals[] = {
    {"collections", "OrderedDict", kOrderedDict, DType::U8},
    {"torch._utils", "_rebuild_tensor_v2", kRebuildTensorV2, DType::U8},
    {"torch._utils", "_rebuild_tensor", kRebuildTensor, DType::U8},
    {"torch._utils", "_rebuild_parameter", kRebuildParameter, DType::U8},
    {"torch._utils", "_rebuild_parameter_with_state", kRebuildParameterWithState, DType::U8},
    {"torch", "Size", kTorchSize, DType::U8},
    {"_codecs", "encode", kCodecsEncode, DType::U8},
    {"torch", "FloatStorage", kStorageType, DType::F32},
    {"torch", "HalfStorage", kStorageType, DType::F16},
    {"torch", "BFloat16Storage", kStorageType, DType::BF16},
    {"torch", "DoubleStorage", kStorageType, DType::F64},
    {"torch", "IntStorage", kStorageType, DType::I32},
    {"torch", "LongStorage", kStorageType, DType::I64},
    {"torch", "ShortStorage", kStorageType, DType::I16},
    {"torch", "ByteStorage", kStorageType, DType::U8},
    {"torch", "CharStorage", kStorageType, DType::I8},
    {"torch", "BoolStorage", kStorageType, DType::BOOL},
    {"torch", "UntypedStorage", kStorageType, DType::U8},
};

struct DtypeName {
  std::string_view name;
  DType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"float32", DType::F32}, {"float", DType::F32},    {"float16", DType::F16}, {"half", DType::F16},
    {"bfloat16", DType::BF16}, {"float64", DType::F64}, {"double", DType::F64}, {"int32", DType::I32},
    {"int", DType::I32},     {"int64", DType::I64},    {"long", DType::I64},    {"int16", DType::I16},
    {"short", DType::I16},   {"uint8", DType::U8},     {"int8", DType::I8},     {"bool", DType::BOOL},
};

constexpr size_t kMaxObjects = 1u << 20;  // a LLaMA-65B state dict needs ~20k; refuse pickle bombs
// Item references copied out of existing containers (OrderedDict(list)): each REDUCE costs a few
// bytes of pickle but copies the whole list, so the total is bounded separately.
constexpr size_t kMaxCopiedItems = 1u << 24;
constexpr int kMaxRank = 16;

uint64_t rd_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

}  // namespace

const char* kind_name(PyObj::Kind k) {
  static constexpr const char* kNames[] = {"None", "bool", "int", "int", "float", "str", "bytes", "tuple",
                                           "list", "dict", "set", "global", "storage", "tensor", "dtype"};
  return kNames[size_t(k)];
}

const PyObj* PyObj::dict_find(const std::string& key) const {
  for (size_t k = 0; k + 1 < items.size(); k += 2)
    if (items[k]->kind == Kind::Str && items[k]->s == key) return items[k + 1];
  return nullptr;
}

Unpickler::Unpickler(const uint8_t* data, size_t size, std::string what)
    : data_(data), size_(size), what_(std::move(what)) {}

Unpickler::~Unpickler() = default;

void Unpickler::bad(size_t at, const std::string& msg) const { fail(what_, ": pickle byte ", at, ": ", msg); }

PyObj* Unpickler::make(K k) {
  if (arena_.size() >= kMaxObjects) bad(pos_, cat("more than ", kMaxObjects, " objects; not a state dict"));
  arena_.push_back(std::make_unique<PyObj>());
  arena_.back()->kind = k;
  return arena_.back().get();
}

PyObj* Unpickler::pop() {
  if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) bad(pos_, "stack underflow");
  PyObj* o = stack_.back();
  stack_.pop_back();
  return o;
}

std::vector<PyObj*> Unpickler::pop_mark() {
  if (marks_.empty()) bad(pos_, "no MARK on the stack");
  size_t m = marks_.back();
  marks_.pop_back();
  std::vector<PyObj*> v(stack_.begin() + ptrdiff_t(m), stack_.end());
  stack_.resize(m);
  return v;
}

PyObj* Unpickler::global(const std::string& module, const std::string& name, size_t at) {
  std::string mod = module == "__builtin__" ? "builtins" : module;
  for (const auto& g : kGlobals) {
    if (g.module == mod && g.name == name) {
      PyObj* o = make(K::Global);
      o->s = mod + "." + name;
      o->i = g.what;
      o->dtype = g.dtype;
      return o;
    }
  }
  if (mod == "torch") {
    for (const auto& d : kDtypes) {
      if (d.name == name) {
        PyObj* o = make(K::Dtype);
        o->dtype = d.dtype;
        return o;
      }
    }
  }
  bad(at, cat("refusing the global '", mod, ".", name, "': only the globals of PyTorch state dicts are allowed "
              "(a pickle can run code through any other); nothing was executed"));
}

PyObj* Unpickler::persistent_load(PyObj* pid, size_t at) {
  auto& it = pid->items;
  if (!pid->is(K::Tuple) || it.size() < 5 || !it[0]->is(K::Str) || it[0]->s != "storage")
    bad(at, "persistent id is not a ('storage', type, key, location, numel) tuple");
  if (!it[1]->is(K::Global) || it[1]->i != kStorageType) bad(at, "persistent id names no storage type");
  if (!it[2]->is(K::Str) && !it[2]->is(K::Int)) bad(at, "storage key is not a string");
  if (!it[4]->is(K::Int) || it[4]->i < 0) bad(at, "storage size is not a non-negative integer");
  PyObj* s = make(K::Storage);
  s->s = it[2]->is(K::Str) ? it[2]->s : std::to_string(it[2]->i);
  s->dtype = it[1]->dtype;
  s->location = it[3]->is(K::Str) ? it[3]->s : "";
  s->numel = s->root_numel = it[4]->i;
  if (it.size() > 5 && !it[5]->is(K::None)) {  // legacy view: (view_key, offset, size) into the root
    const PyObj* v = it[5];
    if (!v->is(K::Tuple) || v->items.size() != 3 || !v->items[1]->is(K::Int) || !v->items[2]->is(K::Int) ||
        v->items[1]->i < 0 || v->items[2]->i < 0 || v->items[1]->i > s->root_numel ||
        v->items[2]->i > s->root_numel - v->items[1]->i)
      bad(at, cat("storage '", s->s, "': malformed or out-of-range view metadata"));
    s->view_offset = v->items[1]->i;
    s->numel = v->items[2]->i;
  }
  storages_.push_back(s);
  return s;
}

PyObj* Unpickler::call(PyObj* fn, PyObj* args, size_t at) {
  if (!fn->is(K::Global) || fn->i == kStorageType)
    bad(at, cat("cannot call a ", fn->is(K::Global) ? fn->s : kind_name(fn->kind)));
  if (!args->is(K::Tuple)) bad(at, cat(fn->s, ": arguments are not a tuple"));
  const auto& a = args->items;
  auto int_list = [&](const PyObj* o, const char* what) {
    if (!o->is(K::Tuple) && !o->is(K::List)) bad(at, cat(fn->s, ": ", what, " is not a tuple"));
    if (o->items.size() > size_t(kMaxRank)) bad(at, cat(fn->s, ": ", what, " has more than ", kMaxRank, " dimensions"));
    std::vector<int64_t> v;
    for (const PyObj* x : o->items) {
      if (!x->is(K::Int) || x->i < 0) bad(at, cat(fn->s, ": ", what, " holds a non-integer or negative value"));
      v.push_back(x->i);
    }
    return v;
  };
  switch (fn->i) {
    case kOrderedDict: {
      PyObj* d = make(K::Dict);
      if (a.size() == 1 && (a[0]->is(K::List) || a[0]->is(K::Tuple))) {
        copied_items_ += 2 * a[0]->items.size();
        if (copied_items_ > kMaxCopiedItems)
          bad(at, cat("OrderedDict: more than ", kMaxCopiedItems, " items copied in all; not a state dict"));
        for (PyObj* kv : a[0]->items) {
          if (!kv->is(K::Tuple) || kv->items.size() != 2) bad(at, "OrderedDict: items are not (key, value) pairs");
          d->items.push_back(kv->items[0]);
          d->items.push_back(kv->items[1]);
        }
      } else if (!a.empty()) {
        bad(at, "OrderedDict: unexpected arguments");
      }
      return d;
    }
    case kTorchSize: {
      if (a.size() != 1) bad(at, "torch.Size: expected one argument");
      PyObj* t = make(K::Tuple);
      int_list(a[0], "size");
      t->items = a[0]->items;
      return t;
    }
    case kCodecsEncode: {
      if (a.size() != 2 || !a[0]->is(K::Str) || !a[1]->is(K::Str)) bad(at, "_codecs.encode: expected (str, encoding)");
      PyObj* b = make(K::Bytes);
      const std::string& enc = a[1]->s;
      if (enc == "latin1" || enc == "latin-1") {  // UTF-8 text of code points < 256 -> those bytes
        const std::string& u = a[0]->s;
        for (size_t k = 0; k < u.size(); ++k) {
          uint8_t c = uint8_t(u[k]);
          if (c < 0x80) {
            b->s.push_back(char(c));
          } else if ((c == 0xC2 || c == 0xC3) && k + 1 < u.size()) {
            b->s.push_back(char(((c & 0x03) << 6) | (uint8_t(u[++k]) & 0x3F)));
          } else {
            bad(at, "_codecs.encode: text is not latin-1");
          }
        }
      } else if (enc == "utf-8" || enc == "utf8") {
        b->s = a[0]->s;
      } else {
        bad(at, cat("_codecs.encode: unsupported encoding '", enc, "'"));
      }
      return b;
    }
    case kRebuildTensorV2:
    case kRebuildTensor: {
      if (a.size() < 4 || !a[0]->is(K::Storage) || !a[1]->is(K::Int) || a[1]->i < 0)
        bad(at, cat(fn->s, ": expected (storage, offset, size, stride, ...)"));
      PyObj* t = make(K::Tensor);
      t->items.push_back(a[0]);
      t->dtype = a[0]->dtype;
      t->offset = a[1]->i;
      t->shape = int_list(a[2], "size");
      t->stride = int_list(a[3], "stride");
      if (t->shape.size() != t->stride.size())
        bad(at, cat(fn->s, ": size has ", t->shape.size(), " dimensions but stride has ", t->stride.size()));
      return t;
    }
    case kRebuildParameter:
    case kRebuildParameterWithState:
      if (a.empty() || !a[0]->is(K::Tensor)) bad(at, cat(fn->s, ": first argument is not a tensor"));
      return a[0];
    default:
      bad(at, cat("cannot call ", fn->s));
  }
}

const PyObj* Unpickler::load() {
  stack_.clear();
  marks_.clear();
  memo_.clear();
  auto need = [&](size_t n) {
    if (n > size_ - pos_) bad(pos_, "unexpected end of data (truncated pickle)");
  };
  auto read_line = [&]() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!nl) bad(pos_, "unterminated text argument");
    size_t n = size_t(static_cast<const uint8_t*>(nl) - (data_ + pos_));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n + 1;
    return s;
  };
  auto take = [&](size_t n) {
    need(n);
    uint64_t v = rd_le(data_ + pos_, int(n));
    pos_ += n;
    return v;
  };
  auto push_bytes = [&](K k, uint64_t n) {
    need(n);
    PyObj* o = make(k);
    o->s.assign(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += size_t(n);
    stack_.push_back(o);
  };
  auto push_int = [&](int64_t v) {
    PyObj* o = make(K::Int);
    o->i = v;
    stack_.push_back(o);
  };
  auto push_long = [&](uint64_t n) {  // little-endian two's complement of n bytes
    need(n);
    const uint8_t* p = data_ + pos_;
    if (n <= 8) {
      uint64_t v = n ? rd_le(p, int(n)) : 0;
      if (n && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
      push_int(int64_t(v));
    } else {
      push_bytes(K::BigInt, n);
      return;
    }
    pos_ += size_t(n);
  };
  auto top = [&]() -> PyObj* {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) bad(pos_, "stack underflow");
    return stack_.back();
  };
  auto parse_int = [&](const std::string& s, size_t at) -> int64_t {
    std::string t = s;
    if (!t.empty() && t.back() == 'L') t.pop_back();
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(t.c_str(), &end, 10);
    if (t.empty() || *end || errno) bad(at, cat("bad integer '", s, "'"));
    return v;
  };
  auto memo_get = [&](uint64_t k, size_t at) {
    auto it = memo_.find(k);
    if (it == memo_.end()) bad(at, cat("memo key ", k, " was never stored"));
    stack_.push_back(it->second);
  };
  auto memo_put = [&](uint64_t k) { memo_[k] = top(); };
  // Keys are appended as they come; a repeated tensor name is reported by the tensor store.
  auto set_items = [&](PyObj* d, const std::vector<PyObj*>& kv, size_t at) {
    if (!d->is(K::Dict)) bad(at, cat("SETITEMS on a ", kind_name(d->kind)));
    if (kv.size() % 2) bad(at, "SETITEMS with an odd number of items");
    d->items.insert(d->items.end(), kv.begin(), kv.end());
  };

  for (;;) {
    need(1);
    const size_t at = pos_;
    const uint8_t op = data_[pos_++];
    switch (op) {
      case 0x80: take(1); break;                         // PROTO
      case 0x95: take(8); break;                         // FRAME (framing is transparent)
      case '.': {                                        // STOP
        PyObj* r = pop();
        return r;
      }
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0': pop(); break;                            // POP
      case '1': pop_mark(); break;                       // POP_MARK
      case '2': stack_.push_back(top()); break;          // DUP
      case 'N': stack_.push_back(make(K::None)); break;
      case 0x88:
      case 0x89: {                                       // NEWTRUE, NEWFALSE
        PyObj* o = make(K::Bool);
        o->i = op == 0x88;
        stack_.push_back(o);
        break;
      }
      case 'J': push_int(int32_t(uint32_t(take(4)))); break;  // BININT
      case 'K': push_int(int64_t(take(1))); break;           // BININT1
      case 'M': push_int(int64_t(take(2))); break;           // BININT2
      case 0x8a: push_long(take(1)); break;                  // LONG1
      case 0x8b: {                                           // LONG4
        uint64_t n = take(4);
        if (n & 0x80000000u) bad(at, "negative LONG4 length");
        push_long(n);
        break;
      }
      case 'I': {  // INT (text): also spells True/False in protocol 0
        std::string s = read_line();
        if (s == "01" || s == "00") {
          PyObj* o = make(K::Bool);
          o->i = s == "01";
          stack_.push_back(o);
        } else {
          push_int(parse_int(s, at));
        }
        break;
      }
      case 'L': push_int(parse_int(read_line(), at)); break;  // LONG (text)
      case 'G': {                                            // BINFLOAT: big-endian double
        need(8);
        uint64_t b = 0;
        for (int k = 0; k < 8; ++k) b = b << 8 | data_[pos_ + size_t(k)];
        pos_ += 8;
        PyObj* o = make(K::Float);
        std::memcpy(&o->f, &b, 8);
        stack_.push_back(o);
        break;
      }
      case 'F': {  // FLOAT (text)
        std::string s = read_line();
        char* end = nullptr;
        PyObj* o = make(K::Float);
        o->f = std::strtod(s.c_str(), &end);
        if (s.empty() || *end) bad(at, cat("bad float '", s, "'"));
        stack_.push_back(o);
        break;
      }
      case 'X': push_bytes(K::Str, take(4)); break;          // BINUNICODE
      case 0x8c: push_bytes(K::Str, take(1)); break;         // SHORT_BINUNICODE
      case 0x8d: push_bytes(K::Str, take(8)); break;         // BINUNICODE8
      case 'T': push_bytes(K::Bytes, take(4)); break;        // BINSTRING (py2 str)
      case 'U': push_bytes(K::Bytes, take(1)); break;        // SHORT_BINSTRING
      case 'B': push_bytes(K::Bytes, take(4)); break;        // BINBYTES
      case 'C': push_bytes(K::Bytes, take(1)); break;        // SHORT_BINBYTES
      case 0x8e: push_bytes(K::Bytes, take(8)); break;       // BINBYTES8
      case 0x96: push_bytes(K::Bytes, take(8)); break;       // BYTEARRAY8
      case ')': stack_.push_back(make(K::Tuple)); break;     // EMPTY_TUPLE
      case ']': stack_.push_back(make(K::List)); break;      // EMPTY_LIST
      case '}': stack_.push_back(make(K::Dict)); break;      // EMPTY_DICT
      case 0x8f: stack_.push_back(make(K::Set)); break;      // EMPTY_SET
      case 't':
      case 'l':
      case 0x91: {  // TUPLE, LIST, FROZENSET
        auto items = pop_mark();
        PyObj* o = make(op == 't' ? K::Tuple : op == 'l' ? K::List : K::Set);
        o->items = std::move(items);
        stack_.push_back(o);
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        size_t n = size_t(op - 0x84);
        PyObj* o = make(K::Tuple);
        o->items.resize(n);
        for (size_t k = n; k-- > 0;) o->items[k] = pop();
        stack_.push_back(o);
        break;
      }
      case 'd': {  // DICT
        auto kv = pop_mark();
        PyObj* d = make(K::Dict);
        set_items(d, kv, at);
        stack_.push_back(d);
        break;
      }
      case 's': {  // SETITEM
        PyObj* v = pop();
        PyObj* k = pop();
        set_items(top(), {k, v}, at);
        break;
      }
      case 'u': {  // SETITEMS
        auto kv = pop_mark();
        set_items(top(), kv, at);
        break;
      }
      case 'a': {  // APPEND
        PyObj* v = pop();
        PyObj* l = top();
        if (!l->is(K::List)) bad(at, cat("APPEND to a ", kind_name(l->kind)));
        l->items.push_back(v);
        break;
      }
      case 'e':
      case 0x90: {  // APPENDS, ADDITEMS
        auto v = pop_mark();
        PyObj* l = top();
        if (!l->is(op == 'e' ? K::List : K::Set)) bad(at, cat(op == 'e' ? "APPENDS to a " : "ADDITEMS to a ", kind_name(l->kind)));
        l->items.insert(l->items.end(), v.begin(), v.end());
        break;
      }
      case 'h': memo_get(take(1), at); break;  // BINGET
      case 'j': memo_get(take(4), at); break;  // LONG_BINGET
      case 'g': memo_get(uint64_t(parse_int(read_line(), at)), at); break;  // GET
      case 'q': memo_put(take(1)); break;      // BINPUT
      case 'r': memo_put(take(4)); break;      // LONG_BINPUT
      case 'p': memo_put(uint64_t(parse_int(read_line(), at))); break;  // PUT
      case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
      case 'c': {  // GLOBAL "module\nname\n"
        std::string module = read_line();
        std::string name = read_line();
        stack_.push_back(global(module, name, at));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PyObj* name = pop();
        PyObj* module = pop();
        if (!name->is(K::Str) || !module->is(K::Str)) bad(at, "STACK_GLOBAL needs two strings");
        stack_.push_back(global(module->s, name->s, at));
        break;
      }
      case 'R': {  // REDUCE
        PyObj* args = pop();
        PyObj* fn = pop();
        stack_.push_back(call(fn, args, at));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args); only OrderedDict may be built this way
        PyObj* args = pop();
        PyObj* cls = pop();
        if (!cls->is(K::Global) || cls->i != kOrderedDict) bad(at, cat("NEWOBJ of ", cls->is(K::Global) ? cls->s : kind_name(cls->kind)));
        stack_.push_back(call(cls, args, at));
        break;
      }
      case 'b': pop(); top(); break;  // BUILD: object state (OrderedDict._metadata) is not needed
      case 'Q': {                    // BINPERSID
        PyObj* pid = pop();
        stack_.push_back(persistent_load(pid, at));
        break;
      }
      case 'P': bad(at, "text persistent ids (PERSID) are not used by torch.save");
      case 'i': bad(at, "refusing opcode INST (instantiates an arbitrary class); nothing was executed");
      case 'o': bad(at, "refusing opcode OBJ (instantiates an arbitrary class); nothing was executed");
      case 0x92: bad(at, "refusing opcode NEWOBJ_EX (instantiates an arbitrary class); nothing was executed");
      case 0x82:
      case 0x83:
      case 0x84: bad(at, "refusing extension-registry opcodes (EXT1/2/4): they name globals indirectly");
      case 0x97:
      case 0x98: bad(at, "out-of-band buffers (protocol 5) are not used by torch.save");
      case 'S':
      case 'V': bad(at, "text strings (protocol 0) are not supported");
      default: bad(at, cat("unknown pickle opcode 0x", "0123456789abcdef"[op >> 4], "0123456789abcdef"[op & 15]));
    }
  }
}

}  // namespace metharme
