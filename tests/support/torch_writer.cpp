#include "support/torch_writer.h"

#include <zlib.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace metharme::test {

namespace {

void put(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}

std::string deflate_raw(const std::string& in) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
  std::string out(deflateBound(&z, uLong(in.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = uInt(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

Pickle& Pickle::str(const std::string& v) {
  op('X');
  put(s_, v.size(), 4);
  return raw(v);
}

Pickle& Pickle::integer(int64_t v) {
  if (v >= 0 && v < 256) return op('K').byte(uint8_t(v));
  if (v >= 0 && v < 65536) {
    op('M');
    put(s_, uint64_t(v), 2);
    return *this;
  }
  if (v >= INT32_MIN && v <= INT32_MAX) {
    op('J');
    put(s_, uint64_t(uint32_t(int32_t(v))), 4);
    return *this;
  }
  op(0x8a).byte(8);
  put(s_, uint64_t(v), 8);
  return *this;
}

std::string state_dict_pickle(const std::vector<FakeTensor>& tensors, bool legacy) {
  Pickle p;
  p.proto().global("collections", "OrderedDict").op(')').reduce().mark();
  for (const auto& t : tensors) {
    std::vector<int64_t> stride = t.stride;
    if (stride.empty()) {
      stride.resize(t.shape.size());
      int64_t s = 1;
      for (size_t i = t.shape.size(); i-- > 0;) {
        stride[i] = s;
        s *= t.shape[i];
      }
    }
    p.str(t.name).global("torch._utils", "_rebuild_tensor_v2").mark();
    p.mark().str("storage").global("torch", t.storage_type).str(t.key).str("cpu").integer(t.storage_numel);
    if (legacy) {
      if (t.legacy_view)
        p.mark().str(t.key + "_view").integer(t.view_offset).integer(t.view_numel).tuple();
      else
        p.op('N');
    }
    p.tuple().op('Q').integer(t.offset);
    p.mark();
    for (int64_t d : t.shape) p.integer(d);
    p.tuple().mark();
    for (int64_t d : stride) p.integer(d);
    p.tuple().op(0x89).global("collections", "OrderedDict").op(')').reduce().tuple().reduce();
  }
  return p.op('u').stop().bytes();
}

std::string zip_bytes(const std::vector<ZipItem>& items, const ZipOptions& opt) {
  std::string out, central;
  for (const auto& it : items) {
    const std::string data = opt.deflate ? deflate_raw(it.data) : it.data;
    const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(it.data.data()), uInt(it.data.size())));
    const uint64_t offset = out.size();
    size_t pad = 0;
    if (opt.align > 0) {
      size_t start = offset + 30 + it.name.size() + 4;  // + a padding extra field header
      pad = (size_t(opt.align) - start % size_t(opt.align)) % size_t(opt.align);
    }
    put(out, 0x04034b50, 4);
    put(out, opt.zip64 ? 45 : 20, 2);
    put(out, 0, 2);
    put(out, opt.deflate ? 8 : 0, 2);
    put(out, 0, 4);  // time, date
    put(out, crc, 4);
    put(out, data.size(), 4);
    put(out, it.data.size(), 4);
    put(out, it.name.size(), 2);
    put(out, opt.align > 0 ? 4 + pad : 0, 2);
    out += it.name;
    if (opt.align > 0) {
      put(out, 0x4246, 2);  // "FB" padding record, as torch writes
      put(out, pad, 2);
      out.append(pad, 'Z');
    }
    out += data;

    put(central, 0x02014b50, 4);
    put(central, 45, 2);
    put(central, opt.zip64 ? 45 : 20, 2);
    put(central, 0, 2);
    put(central, opt.deflate ? 8 : 0, 2);
    put(central, 0, 4);
    put(central, crc, 4);
    put(central, opt.zip64 ? 0xFFFFFFFFu : data.size(), 4);
    put(central, opt.zip64 ? 0xFFFFFFFFu : it.data.size(), 4);
    put(central, it.name.size(), 2);
    put(central, opt.zip64 ? 28 : 0, 2);
    put(central, 0, 2);  // comment
    put(central, 0, 2);  // disk
    put(central, 0, 2);  // internal attributes
    put(central, 0, 4);  // external attributes
    put(central, opt.zip64 ? 0xFFFFFFFFu : offset, 4);
    central += it.name;
    if (opt.zip64) {
      put(central, 0x0001, 2);
      put(central, 24, 2);
      put(central, it.data.size(), 8);
      put(central, data.size(), 8);
      put(central, offset, 8);
    }
  }
  const uint64_t cd_offset = out.size();
  out += central;
  if (opt.zip64) {
    const uint64_t z = out.size();
    put(out, 0x06064b50, 4);
    put(out, 44, 8);
    put(out, 45, 2);
    put(out, 45, 2);
    put(out, 0, 4);
    put(out, 0, 4);
    put(out, items.size(), 8);
    put(out, items.size(), 8);
    put(out, central.size(), 8);
    put(out, cd_offset, 8);
    put(out, 0x07064b50, 4);
    put(out, 0, 4);
    put(out, z, 8);
    put(out, 1, 4);
  }
  put(out, 0x06054b50, 4);
  put(out, 0, 4);
  put(out, opt.zip64 ? 0xFFFF : items.size(), 2);
  put(out, opt.zip64 ? 0xFFFF : items.size(), 2);
  put(out, opt.zip64 ? 0xFFFFFFFFu : central.size(), 4);
  put(out, opt.zip64 ? 0xFFFFFFFFu : cd_offset, 4);
  put(out, 0, 2);
  return out;
}

std::string torch_zip(const std::string& pickle, const std::vector<std::pair<std::string, std::string>>& storages,
                      const ZipOptions& opt) {
  std::vector<ZipItem> items{{"archive/data.pkl", pickle}};
  for (const auto& [key, data] : storages) items.push_back({"archive/data/" + key, data});
  items.push_back({"archive/version", "3\n"});
  return zip_bytes(items, opt);
}

std::string torch_legacy(const std::string& pickle, const std::vector<LegacyStorage>& storages) {
  static const uint8_t kMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  Pickle magic;
  magic.proto().op(0x8a).byte(10).raw(std::string(reinterpret_cast<const char*>(kMagic), 10)).stop();
  Pickle version;
  version.proto().integer(1001).stop();
  Pickle info;
  info.proto().op('}').mark().str("protocol_version").integer(1001).str("little_endian").op(0x88).op('u').stop();
  Pickle keys;
  keys.proto().op(']').mark();
  for (const auto& s : storages) keys.str(s.key);
  keys.op('e').stop();
  std::string out = magic.bytes() + version.bytes() + info.bytes() + pickle + keys.bytes();
  for (const auto& s : storages) {
    put(out, uint64_t(s.numel), 8);
    out += s.data;
  }
  return out;
}

std::string floats_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());
  return s;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace metharme::test
