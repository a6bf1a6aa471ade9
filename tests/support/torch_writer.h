// Builds small torch.save-style files for tests: pickles opcode by opcode, zip archives (stored or
// deflated, optionally ZIP64), and the legacy layout, so that each error path can be provoked.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace metharme::test {

// Protocol-2 pickle bytes, written opcode by opcode.
class Pickle {
 public:
  Pickle& proto() { return op(0x80).byte(2); }
  Pickle& op(uint8_t o) { return byte(o); }
  Pickle& byte(uint8_t b) {
    s_.push_back(char(b));
    return *this;
  }
  Pickle& raw(const std::string& b) {
    s_ += b;
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) { return op('c').raw(module + "\n" + name + "\n"); }
  Pickle& str(const std::string& v);      // BINUNICODE
  Pickle& integer(int64_t v);             // BININT1/2, BININT or LONG1
  Pickle& mark() { return op('('); }
  Pickle& tuple() { return op('t'); }
  Pickle& reduce() { return op('R'); }
  Pickle& stop() { return op('.'); }
  const std::string& bytes() const { return s_; }

 private:
  std::string s_;
};

struct FakeTensor {
  std::string name;
  std::string storage_type = "FloatStorage";
  std::string key = "0";
  int64_t storage_numel = 0;
  int64_t offset = 0;
  std::vector<int64_t> shape, stride;  // stride empty: contiguous
  bool legacy_view = false;            // legacy only: storage view (view_key, view_offset, view_numel)
  int64_t view_offset = 0, view_numel = 0;
};

// An OrderedDict state dict of `tensors` as torch.save pickles it (protocol 2). `legacy` adds
// the sixth persistent-id element (view metadata or None).
std::string state_dict_pickle(const std::vector<FakeTensor>& tensors, bool legacy = false);

struct ZipItem {
  std::string name, data;
};
struct ZipOptions {
  bool deflate = false;
  bool zip64 = false;   // write ZIP64 end records and extra fields even though sizes are small
  int align = 64;       // align stored data like torch does (0: no alignment)
};
std::string zip_bytes(const std::vector<ZipItem>& items, const ZipOptions& opt = {});

// A torch.save zip: archive/data.pkl, archive/data/<key> for each storage, archive/version.
std::string torch_zip(const std::string& pickle, const std::vector<std::pair<std::string, std::string>>& storages,
                      const ZipOptions& opt = {});

// The legacy layout: magic, protocol, sys info, `pickle`, key list, then each storage as
// int64 element count + bytes.
struct LegacyStorage {
  std::string key;
  int64_t numel;
  std::string data;
};
std::string torch_legacy(const std::string& pickle, const std::vector<LegacyStorage>& storages);

std::string floats_bytes(const std::vector<float>& v);
void write_bytes(const std::string& path, const std::string& bytes);
std::string read_bytes(const std::string& path);

}  // namespace metharme::test
