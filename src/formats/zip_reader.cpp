#include "formats/zip_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace metharme {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr size_t kEocdSize = 22, kCentralSize = 46, kLocalSize = 30, kLocatorSize = 20, kZip64EocdSize = 56;

uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t rd64(const uint8_t* p) { return uint64_t(rd32(p)) | uint64_t(rd32(p + 4)) << 32; }

}  // namespace

bool ZipReader::looks_like_zip(const uint8_t* p, size_t n) { return n >= 4 && rd32(p) == kLocalSig; }

ZipReader::ZipReader(const std::string& path) : file_(path) { read_directory(); }

void ZipReader::read_directory() {
  const uint8_t* d = file_.data();
  const uint64_t size = file_.size();
  const std::string& path = file_.path();
  if (size < kEocdSize) fail(path, ": zip archive is too short (", size, " bytes; truncated?)");

  // The end-of-central-directory record sits at the end, before an optional comment (< 64 KiB).
  uint64_t eocd = UINT64_MAX;
  uint64_t lowest = size > kEocdSize + 0xFFFF ? size - kEocdSize - 0xFFFF : 0;
  for (uint64_t p = size - kEocdSize + 1; p-- > lowest;) {
    if (rd32(d + p) == kEocdSig && p + kEocdSize + rd16(d + p + 20) <= size) {
      eocd = p;
      break;
    }
  }
  if (eocd == UINT64_MAX)
    fail(path, ": no zip end-of-central-directory record (the file is truncated or not a zip archive)");
  uint64_t n_entries = rd16(d + eocd + 10);
  uint64_t cd_size = rd32(d + eocd + 12);
  uint64_t cd_offset = rd32(d + eocd + 16);
  uint64_t cd_limit = eocd;
  if (eocd >= kLocatorSize && rd32(d + eocd - kLocatorSize) == kZip64LocatorSig) {
    // The ZIP64 record must end before the locator; `z` comes from the file, so compare without
    // adding to it (a value near 2^64 would wrap).
    const uint64_t z = rd64(d + eocd - kLocatorSize + 8), z_end = eocd - kLocatorSize;
    if (z_end < kZip64EocdSize || z > z_end - kZip64EocdSize || rd32(d + z) != kZip64EocdSig)
      fail(path, ": ZIP64 end-of-central-directory record is missing or corrupt");
    n_entries = rd64(d + z + 32);
    cd_size = rd64(d + z + 40);
    cd_offset = rd64(d + z + 48);
    cd_limit = z;
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail(path, ": central directory (offset ", cd_offset, ", ", cd_size,
         " bytes) lies outside the archive (truncated or corrupt file)");
  if (n_entries > cd_size / kCentralSize) fail(path, ": central directory claims ", n_entries, " entries in ", cd_size, " bytes");

  entries_.reserve(size_t(n_entries));
  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < n_entries; ++i) {
    if (p + kCentralSize > cd_end || rd32(d + p) != kCentralSig)
      fail(path, ": central directory entry ", i, " is corrupt");
    const uint8_t* h = d + p;
    uint16_t flags = rd16(h + 8);
    ZipEntry e;
    e.method = rd16(h + 10);
    e.crc32 = rd32(h + 16);
    e.compressed = rd32(h + 20);
    e.size = rd32(h + 24);
    uint16_t name_len = rd16(h + 28), extra_len = rd16(h + 30), comment_len = rd16(h + 32);
    uint64_t local = rd32(h + 42);
    if (p + kCentralSize + name_len + extra_len + comment_len > cd_end)
      fail(path, ": central directory entry ", i, " runs past the directory");
    e.name.assign(reinterpret_cast<const char*>(h + kCentralSize), name_len);
    // ZIP64 extra field: 64-bit values for each 32-bit field that is saturated, in this order.
    const uint8_t* x = h + kCentralSize + name_len;
    for (size_t off = 0; off + 4 <= extra_len;) {
      uint16_t id = rd16(x + off), len = rd16(x + off + 2);
      if (off + 4 + len > extra_len) break;
      if (id == 0x0001) {
        const uint8_t* v = x + off + 4;
        size_t avail = len;
        auto take = [&](uint64_t& field) {
          if (field != 0xFFFFFFFFu) return;
          if (avail < 8) fail(path, ": entry '", e.name, "': ZIP64 extra field is too short");
          field = rd64(v);
          v += 8;
          avail -= 8;
        };
        take(e.size);
        take(e.compressed);
        take(local);
      }
      off += 4 + size_t(len);
    }
    if (flags & 1) fail(path, ": entry '", e.name, "' is encrypted");
    if (e.method != 0 && e.method != 8)
      fail(path, ": entry '", e.name, "' uses compression method ", e.method, " (only stored and deflate are supported)");
    if (e.method == 0 && e.compressed != e.size)
      fail(path, ": stored entry '", e.name, "' has compressed size ", e.compressed, " != size ", e.size);
    if (e.method == 8 && e.size / 1032 > 1 && e.size / 1032 - 1 > e.compressed)  // deflate expands <= ~1032:1
      fail(path, ": entry '", e.name, "' claims ", e.size, " bytes from ", e.compressed, " compressed (corrupt)");
    if (size < kLocalSize || local > size - kLocalSize || rd32(d + local) != kLocalSig)
      fail(path, ": entry '", e.name, "': local header missing at offset ", local, " (truncated or corrupt file)");
    e.data_offset = local + kLocalSize + rd16(d + local + 26) + rd16(d + local + 28);
    if (e.data_offset > size || e.compressed > size - e.data_offset)
      fail(path, ": entry '", e.name, "' (", e.compressed, " bytes at offset ", e.data_offset,
           ") runs past the end of the file (", size, " bytes; truncated?)");
    if (!by_name_.emplace(e.name, entries_.size()).second) fail(path, ": entry '", e.name, "' appears twice");
    entries_.push_back(std::move(e));
    p += kCentralSize + name_len + extra_len + comment_len;
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipReader::stored_data(const ZipEntry& e) const {
  MH_CHECK(e.method == 0, path(), ": entry '", e.name, "' is compressed");
  return file_.data() + e.data_offset;
}

void ZipReader::extract(const ZipEntry& e, std::vector<uint8_t>& out) const {
  out.resize(size_t(e.size));
  const uint8_t* src = file_.data() + e.data_offset;
  if (e.method == 0) {
    if (e.size) std::memcpy(out.data(), src, size_t(e.size));
  } else {
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail(path(), ": zlib initialisation failed");
    uint64_t in_left = e.compressed, out_given = 0;
    uint8_t spare = 0;  // lets zlib reach the end marker once `out` is full; any byte here is an overflow
    bool overflow = false;
    int rc = Z_OK;
    for (;;) {
      // zlib counts in 32-bit units: feed and drain at most 1 GiB at a time.
      if (z.avail_in == 0 && in_left) {
        z.next_in = const_cast<Bytef*>(src + (e.compressed - in_left));
        z.avail_in = uInt(std::min<uint64_t>(in_left, 1u << 30));
        in_left -= z.avail_in;
      }
      if (z.avail_out == 0) {
        if (out_given < e.size) {
          z.next_out = out.data() + out_given;
          z.avail_out = uInt(std::min<uint64_t>(e.size - out_given, 1u << 30));
          out_given += z.avail_out;
        } else if (z.next_out == &spare + 1) {
          overflow = true;
          break;
        } else {
          z.next_out = &spare;
          z.avail_out = 1;
          ++out_given;
        }
      }
      rc = inflate(&z, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) break;
      if (rc != Z_OK && !(rc == Z_BUF_ERROR && (z.avail_in || in_left))) break;
    }
    uint64_t produced = out_given - z.avail_out;
    inflateEnd(&z);
    if (overflow || produced > e.size)
      fail(path(), ": entry '", e.name, "': deflate data inflates to more than the declared ", e.size, " bytes");
    if (rc != Z_STREAM_END || produced != e.size)
      fail(path(), ": entry '", e.name, "': deflate data is corrupt or truncated (", produced, " of ", e.size, " bytes)");
  }
  if (crc32_z(0, out.data(), out.size()) != e.crc32) fail(path(), ": entry '", e.name, "': CRC-32 mismatch (corrupt file)");
}

}  // namespace metharme
