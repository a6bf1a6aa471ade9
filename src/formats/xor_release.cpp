#include "formats/xor_release.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "util/digest.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"
#include "util/staging_dir.h"

namespace metharme {

namespace {

namespace fs = std::filesystem;
using Kind = XorFileResult::Kind;
using Check = XorFileResult::Check;

constexpr uint64_t kMaxJsonBytes = 16u << 20;  // bigger files are never treated as plain JSON
constexpr const char* kManifest = "checksums.sha256";

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(uint8_t(c)));
  return s;
}

bool is_checksum_list(const std::string& name) {
  const std::string n = lower(name);
  for (const char* ext : {".md5", ".sha256", ".md5sum", ".sha256sum"})
    if (n.ends_with(ext)) return true;
  return n == "md5sums" || n == "sha256sums" || n.rfind("checksums", 0) == 0;
}

bool is_hex(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(uint8_t(c)); });
}

const char* kind_label(Kind k) {
  switch (k) {
    case Kind::kXor: return "xor";
    case Kind::kXorGzip: return "xor (gzip payload)";
    case Kind::kCopyJson: return "copied (plain JSON)";
    case Kind::kCopyNoBase: return "copied (no base file)";
    default: return "copied (checksum list)";
  }
}

// Reads the first bytes of a file.
std::string head_bytes(const fs::path& p, size_t n) {
  std::string s(n, '\0');
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) fail(p.string(), ": cannot open: ", std::strerror(errno));
  s.resize(std::fread(s.data(), 1, n, f));
  std::fclose(f);
  return s;
}

bool parses_as_json(const fs::path& p) {
  std::error_code ec;
  auto size = fs::file_size(p, ec);
  if (ec || size > kMaxJsonBytes) return false;
  return nlohmann::json::accept(read_text_file(p.string()));
}

struct Planned {
  std::string name;
  Kind kind;
  fs::path payload, base;
};

// Streams one payload through XOR with its base into `out`, hashing what it writes.
uint64_t decode_file(const Planned& p, AtomicFile& out, std::vector<std::unique_ptr<Digest>>& digests,
                     const XorDecodeOptions& opt) {
  gzFile in = gzopen(p.payload.c_str(), "rb");
  if (!in) fail(p.payload.string(), ": cannot open: ", std::strerror(errno));
  std::unique_ptr<gzFile_s, int (*)(gzFile)> in_guard(in, gzclose);
  gzbuffer(in, 1u << 18);
  std::unique_ptr<FILE, int (*)(FILE*)> base_guard(nullptr, std::fclose);
  if (p.kind == Kind::kXor || p.kind == Kind::kXorGzip) {
    base_guard.reset(std::fopen(p.base.c_str(), "rb"));
    if (!base_guard) fail(p.base.string(), ": cannot open: ", std::strerror(errno));
  }
  FILE* base = base_guard.get();
  const uint64_t payload_size = fs::file_size(p.payload);
  const int64_t total_mb = int64_t((payload_size + (1 << 20) - 1) >> 20);
  Progress prog(p.name, total_mb, "MB", opt.progress && payload_size >= opt.progress_min_bytes);
  std::vector<uint8_t> buf(opt.block_bytes), bbuf(opt.block_bytes);
  uint64_t total = 0;
  bool base_done = base == nullptr;
  for (;;) {
    int n = gzread(in, buf.data(), unsigned(buf.size()));
    if (n < 0) {
      int err;
      const char* msg = gzerror(in, &err);
      fail(p.payload.string(), ": cannot decompress: ", msg, " (corrupt or truncated gzip payload)");
    }
    if (n == 0) break;
    if (base) {
      size_t got = base_done ? 0 : std::fread(bbuf.data(), 1, size_t(n), base);
      if (got < size_t(n)) {  // base is shorter than the target: XOR with zeros past its end
        if (std::ferror(base)) fail(p.base.string(), ": read error");
        base_done = true;
        std::memset(bbuf.data() + got, 0, size_t(n) - got);
      }
      for (size_t i = 0; i < size_t(n); ++i) buf[i] ^= bbuf[i];
    }
    out.write(buf.data(), size_t(n));
    for (auto& d : digests) d->update(buf.data(), size_t(n));
    total += uint64_t(n);
    prog.update(int64_t(double(gzoffset(in)) / double(std::max<uint64_t>(payload_size, 1)) * double(total_mb)));
  }
  int err = Z_OK;
  const char* msg = gzerror(in, &err);
  if (err != Z_OK) fail(p.payload.string(), ": cannot decompress: ", msg, " (corrupt or truncated gzip payload)");
  prog.finish();
  return total;
}

}  // namespace

std::vector<ChecksumEntry> parse_checksum_list(const std::string& text, const std::string& origin) {
  std::vector<ChecksumEntry> out;
  size_t line_no = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    ChecksumEntry e;
    size_t sp = line.find(' ');
    if (line.rfind("MD5 (", 0) == 0 || line.rfind("SHA256 (", 0) == 0) {  // BSD: ALGO (name) = HEX
      size_t open = line.find('('), close = line.rfind(") = ");
      if (close == std::string::npos || close < open) fail(origin, ": line ", line_no, ": not a checksum line");
      e.algo = lower(line.substr(0, open - 1));
      e.name = line.substr(open + 1, close - open - 1);
      e.hex = lower(line.substr(close + 4));
    } else {
      if (sp == std::string::npos || sp + 1 >= line.size()) fail(origin, ": line ", line_no, ": not a checksum line");
      e.hex = lower(line.substr(0, sp));
      size_t name_at = sp + 1;
      if (line[name_at] == ' ' || line[name_at] == '*') ++name_at;  // text / binary mode marker
      e.name = line.substr(name_at);
    }
    if (e.name.rfind("./", 0) == 0) e.name = e.name.substr(2);
    if (!is_hex(e.hex) || (e.hex.size() != 32 && e.hex.size() != 64) || e.name.empty())
      fail(origin, ": line ", line_no, ": not a checksum line (expected 'HEX  name' with an md5 or sha256 digest)");
    if (e.algo.empty()) e.algo = e.hex.size() == 32 ? "md5" : "sha256";
    if (Digest::hex_length(e.algo == "md5" ? Digest::Algo::kMd5 : Digest::Algo::kSha256) != e.hex.size())
      fail(origin, ": line ", line_no, ": ", e.algo, " digest has the wrong length");
    out.push_back(std::move(e));
  }
  return out;
}

XorDecodeResult xor_decode(const std::string& base_dir, const std::string& payload_dir, const std::string& out_dir,
                           const XorDecodeOptions& opt) {
  auto say = [&](const std::string& s) {
    if (opt.report) opt.report(s);
  };
  for (const auto& [what, dir] : {std::pair{"base", base_dir}, std::pair{"payload", payload_dir}})
    if (!fs::is_directory(dir)) fail(dir, ": ", what, " folder does not exist or is not a folder");

  // Plan every file before writing anything, so a missing base file fails fast.
  std::vector<Planned> plan;
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(payload_dir)) {
    if (e.is_regular_file()) {
      entries.push_back(e.path());
    } else {
      say(cat(e.path().filename().string(), ": skipped (not a regular file)"));
    }
  }
  std::sort(entries.begin(), entries.end());
  if (entries.empty()) fail(payload_dir, ": payload folder holds no files");
  std::map<std::string, std::vector<ChecksumEntry>> lists;  // list file -> entries
  for (const auto& path : entries) {
    Planned p{path.filename().string(), Kind::kXor, path, fs::path(base_dir) / path.filename()};
    if (is_checksum_list(p.name)) {
      p.kind = Kind::kChecksumList;
      lists[p.name] = parse_checksum_list(read_text_file(path.string()), path.string());
    } else if (std::string h = head_bytes(path, 2); h.size() == 2 && uint8_t(h[0]) == 0x1f && uint8_t(h[1]) == 0x8b) {
      p.kind = Kind::kXorGzip;
    } else if (parses_as_json(path)) {
      p.kind = Kind::kCopyJson;
    }
    if ((p.kind == Kind::kXor || p.kind == Kind::kXorGzip) && !fs::is_regular_file(p.base)) {
      // A gzip payload needs its base; other files without one (README.md, .gitattributes) are
      // not payloads and travel as they are.
      if (p.kind == Kind::kXorGzip)
        fail(path.string(), ": gzip XOR payload has no same-named file in the base folder ", base_dir);
      p.kind = Kind::kCopyNoBase;
    }
    plan.push_back(std::move(p));
  }
  // name -> (list, entry) for every listed checksum.
  std::multimap<std::string, std::pair<std::string, ChecksumEntry>> expected;
  bool need_md5 = false;
  for (const auto& [list, es] : lists)
    for (const auto& e : es) {
      expected.emplace(e.name, std::pair{list, e});
      need_md5 |= e.algo == "md5";
    }

  StagingDir out(out_dir, opt.force, {base_dir, payload_dir});
  XorDecodeResult res;
  for (const auto& p : plan) {
    XorFileResult r;
    r.name = p.name;
    r.kind = p.kind;
    std::vector<std::unique_ptr<Digest>> digests;
    digests.push_back(std::make_unique<Digest>(Digest::Algo::kSha256));
    if (need_md5) digests.push_back(std::make_unique<Digest>(Digest::Algo::kMd5));
    AtomicFile f(out / p.name);
    r.bytes = decode_file(p, f, digests, opt);
    f.commit();
    r.sha256 = digests[0]->hex();
    std::string md5 = need_md5 ? digests[1]->hex() : "";
    auto [lo, hi] = expected.equal_range(p.name);
    std::string line = cat(p.name, ": ", kind_label(p.kind), ", ", r.bytes, " bytes");
    if (p.kind == Kind::kChecksumList) {
      r.check = Check::kNotListed;
    } else if (lo == hi) {
      r.check = Check::kNotListed;
      ++res.unlisted;
      line += ", not listed in any checksum file";
    } else {
      r.check = Check::kOk;
      for (auto it = lo; it != hi; ++it) {
        const auto& [list, e] = it->second;
        const std::string& got = e.algo == "md5" ? md5 : r.sha256;
        if (got == e.hex) {
          line += cat(", ", e.algo, " OK (", list, ")");
        } else {
          r.check = Check::kMismatch;
          r.detail += cat(r.detail.empty() ? "" : "; ", e.algo, " expected ", e.hex, " (", list, "), got ", got);
        }
      }
      if (r.check == Check::kMismatch) {
        ++res.mismatched;
        line += cat(", CHECKSUM MISMATCH: ", r.detail);
      } else {
        ++res.verified;
      }
    }
    say(line);
    res.files.push_back(std::move(r));
  }
  for (const auto& [name, le] : expected)
    if (std::none_of(plan.begin(), plan.end(), [&name = name](const Planned& p) { return p.name == name; }))
      say(cat(name, ": listed in ", le.first, " but not in the payload folder"));
  if (res.mismatched) {
    std::string names;
    for (const auto& r : res.files)
      if (r.check == Check::kMismatch) names += (names.empty() ? "" : ", ") + r.name;
    fail("checksum mismatch for ", res.mismatched, " file(s): ", names, "; ", out_dir,
         " was left unchanged (wrong base files, or a corrupt download?)");
  }
  // A sha256 manifest of the decoded files, unless the payload shipped one.
  if (std::none_of(plan.begin(), plan.end(), [](const Planned& p) { return p.name == kManifest; })) {
    std::vector<const XorFileResult*> files;
    for (const auto& r : res.files)
      if (r.kind != Kind::kChecksumList) files.push_back(&r);
    std::string manifest;
    for (const auto* r : files) manifest += r->sha256 + "  " + r->name + "\n";
    write_file_atomic(out / kManifest, manifest);
    res.wrote_manifest = true;
  }
  out.commit();
  return res;
}

}  // namespace metharme
