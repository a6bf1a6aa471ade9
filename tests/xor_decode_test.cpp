// metharme xor-decode: the xor/ fixture decodes to expected/ byte for byte, checksums are
// enforced, the output folder is never half-written, and memory does not grow with file size.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "chat/generate.h"
#include "formats/xor_release.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "support/torch_writer.h"
#include "util/digest.h"
#include "util/error.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> s;
  for (const auto& e : fs::directory_iterator(dir)) s.insert(e.path().filename().string());
  return s;
}

void copy_folder(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from)) {
    fs::copy_file(e.path(), fs::path(to) / e.path().filename());
    fs::permissions(fs::path(to) / e.path().filename(), fs::perms::owner_write, fs::perm_options::add);
  }
}

std::string gzip(const std::string& in) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, uLong(in.size())) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = uInt(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string random_bytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    s[i] = char(seed >> 24);
  }
  return s;
}

std::string xor_pad(const std::string& target, const std::string& base) {
  std::string out = target;
  for (size_t i = 0; i < out.size(); ++i) out[i] = char(out[i] ^ (i < base.size() ? base[i] : 0));
  return out;
}

const std::string kBase = test::fixture("xor/base"), kPayload = test::fixture("xor/payload"),
                  kExpected = test::fixture("xor/expected");

TEST(XorDecode, FixtureReproducesExpectedByteForByte) {
  test::TempDir tmp;
  const std::string out = tmp / "out";
  std::vector<std::string> lines;
  XorDecodeOptions o;
  o.progress = false;
  o.report = [&](const std::string& l) { lines.push_back(l); };
  XorDecodeResult r = xor_decode(kBase, kPayload, out, o);
  EXPECT_EQ(r.verified, 4u);
  EXPECT_EQ(r.mismatched, 0u);
  EXPECT_EQ(r.unlisted, 0u);
  EXPECT_TRUE(r.wrote_manifest);
  ASSERT_EQ(listing(out), listing(kExpected));
  for (const auto& name : listing(kExpected))
    EXPECT_EQ(test::read_bytes(out + "/" + name), test::read_bytes(kExpected + "/" + name)) << name;
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[3], "pytorch_model.bin: xor (gzip payload), 1186113 bytes, md5 OK (checksums.md5)");
  EXPECT_EQ(lines[1], "config.json: copied (plain JSON), 578 bytes, md5 OK (checksums.md5)");
  EXPECT_EQ(listing(tmp.path()), std::set<std::string>{"out"});
}

TEST(XorDecode, DecodedModelGeneratesText) {
  test::TempDir tmp;
  const std::string out = tmp / "metharme-mini";
  auto r = test::run_cli({"xor-decode", "--base", kBase, "--xor", kPayload, "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("decoded 5 files"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("4 verified"), std::string::npos) << r.out;
  // The fixture's decoded tokenizer.model carries 1000 padding bytes past the base's (it tests the
  // longer-than-base case), so the base's tokenizer spells the text.
  auto m = test::load_model(out);
  Tokenizer tok = Tokenizer::from_folder(kBase);
  GenerateOptions go;
  go.max_tokens = 40;
  go.stop_at_eos = false;
  go.sampler.temperature = 0;
  GenerateResult g = generate(*m.rt, tok, tok.encode("Once upon a time", true), go, nullptr);
  EXPECT_EQ(g.tokens.size(), 40u);
  EXPECT_GT(g.text.size(), 60u) << g.text;
  EXPECT_GT(std::count(g.text.begin(), g.text.end(), ' '), 8) << g.text;
  auto ref = test::load_model(kExpected);
  EXPECT_EQ(generate(*ref.rt, tok, tok.encode("Once upon a time", true), go, nullptr).tokens, g.tokens);
  std::printf("decoded model: Once upon a time%s\n", g.text.c_str());
  auto base = test::load_model(kBase);
  EXPECT_NE(generate(*base.rt, tok, tok.encode("Once upon a time", true), go, nullptr).tokens, g.tokens)
      << "the decoded fine-tune writes exactly what the base writes";
  // It is the fine-tune, not the base: the logits differ from the base model's.
  std::vector<int> ids = {1, 403, 407, 261, 378, 31, 400};
  auto la = test::all_logits(*m.rt, ids), lb = test::all_logits(*base.rt, ids);
  EXPECT_GT(test::max_abs_diff(la.data(), lb.data(), la.size()), 1e-3f);
}

TEST(XorDecode, WrongChecksumIsReportedAndOutputLeftUnchanged) {
  test::TempDir tmp;
  const std::string payload = tmp / "payload", out = tmp / "out";
  copy_folder(kPayload, payload);
  std::string sums = test::read_bytes(payload + "/checksums.md5");
  size_t at = sums.find("9029de1b522ad227e8519bc9ac779730");
  ASSERT_NE(at, std::string::npos);
  sums[at] = '8';
  test::write_bytes(payload + "/checksums.md5", sums);

  auto r = test::run_cli({"xor-decode", "--base", kBase, "--xor", payload, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("pytorch_model.bin: xor (gzip payload), 1186113 bytes, CHECKSUM MISMATCH: md5 expected "
                       "8029de1b522ad227e8519bc9ac779730 (checksums.md5), got 9029de1b522ad227e8519bc9ac779730"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("tokenizer.model: xor (gzip payload), 8538 bytes, md5 OK"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("error: checksum mismatch for 1 file(s): pytorch_model.bin;"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("left unchanged"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(listing(tmp.path()), std::set<std::string>{"payload"});

  // An existing folder replaced with --force stays as it was when a checksum fails.
  fs::create_directory(out);
  test::write_bytes(out + "/notes.txt", "mine");
  r = test::run_cli({"xor-decode", "--force", "--base", kBase, "--xor", payload, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(listing(out), std::set<std::string>{"notes.txt"});
  EXPECT_EQ(test::read_bytes(out + "/notes.txt"), "mine");
  EXPECT_EQ(listing(tmp.path()), (std::set<std::string>{"out", "payload"}));
}

TEST(XorDecode, NeverOverwritesWithoutForce) {
  test::TempDir tmp;
  const std::string out = tmp / "out";
  fs::create_directory(out);
  test::write_bytes(out + "/notes.txt", "mine");
  auto r = test::run_cli({"xor-decode", "--base", kBase, "--xor", kPayload, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already exists; pass --force"), std::string::npos) << r.err;
  EXPECT_EQ(listing(out), std::set<std::string>{"notes.txt"});
  r = test::run_cli({"xor-decode", "-q", "--force", "--base", kBase, "--xor", kPayload, "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(listing(out), listing(kExpected));
  // Writing into the base or payload folder is refused.
  r = test::run_cli({"xor-decode", "--force", "--base", kBase, "--xor", kPayload, "-o", kBase});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("must not be, contain or lie inside"), std::string::npos) << r.err;
}

TEST(XorDecode, RawAndGzipPayloadsOfEveryLengthInSmallBlocks) {
  test::TempDir tmp;
  const std::string base = tmp / "base", payload = tmp / "payload", out = tmp / "out";
  fs::create_directories(base);
  fs::create_directories(payload);
  struct Case {
    std::string name;
    size_t base_len, target_len;
    bool gz;
  };
  std::vector<Case> cases = {{"same.bin", 10000, 10000, false}, {"longer.bin", 5000, 12345, true},
                             {"shorter.bin", 20000, 777, true},  {"empty.bin", 100, 0, true},
                             {"raw-longer.bin", 3, 9001, false}};
  std::map<std::string, std::string> targets;
  uint64_t seed = 99;
  for (const auto& c : cases) {
    std::string b = random_bytes(c.base_len, ++seed), t = random_bytes(c.target_len, ++seed);
    test::write_bytes(base + "/" + c.name, b);
    std::string x = xor_pad(t, b);
    test::write_bytes(payload + "/" + c.name, c.gz ? gzip(x) : x);
    targets[c.name] = t;
  }
  test::write_bytes(base + "/meta.json", R"({"old": true})");
  test::write_bytes(payload + "/meta.json", "{\"new\": [1, 2]}\n");
  targets["meta.json"] = "{\"new\": [1, 2]}\n";
  test::write_bytes(payload + "/README.md", "# A fine-tune\n");  // no base file: copied
  targets["README.md"] = "# A fine-tune\n";

  XorDecodeOptions o;
  o.progress = false;
  o.block_bytes = 4096;
  std::vector<std::string> lines;
  o.report = [&](const std::string& l) { lines.push_back(l); };
  XorDecodeResult r = xor_decode(base, payload, out, o);
  EXPECT_EQ(r.unlisted, targets.size());
  std::string manifest;
  for (const auto& [name, t] : targets) {
    EXPECT_EQ(test::read_bytes(out + "/" + name), t) << name;
    Digest d(Digest::Algo::kSha256);
    d.update(t.data(), t.size());
    manifest += d.hex() + "  " + name + "\n";
  }
  EXPECT_EQ(test::read_bytes(out + "/checksums.sha256"), manifest);
  EXPECT_NE(std::find(lines.begin(), lines.end(), "same.bin: xor, 10000 bytes, not listed in any checksum file"), lines.end());
  EXPECT_NE(std::find(lines.begin(), lines.end(), "meta.json: copied (plain JSON), 16 bytes, not listed in any checksum file"),
            lines.end());
  EXPECT_NE(std::find(lines.begin(), lines.end(), "README.md: copied (no base file), 14 bytes, not listed in any checksum file"),
            lines.end());

  // Both checksum formats, sha256 via a SHA256SUMS file in BSD style, verify the same output.
  test::write_bytes(payload + "/SHA256SUMS", "SHA256 (shorter.bin) = " + manifest.substr(manifest.find("shorter.bin") - 66, 64) + "\n");
  r = xor_decode(base, payload, tmp / "out2", o);
  EXPECT_EQ(r.verified, 1u);
  EXPECT_EQ(r.unlisted, targets.size() - 1);
}

TEST(XorDecode, ChecksumListFormats) {
  auto e = parse_checksum_list(
      "# comment\r\n"
      "0ba918a1ec3a2aa629178b581a9657a0  config.json\r\n"
      "0BA918A1EC3A2AA629178B581A9657A0 *bin mode.bin\n"
      "\n"
      "MD5 (./x y.txt) = 0ba918a1ec3a2aa629178b581a9657a0\n"
      "e17b37c989262bbbf1acbae1b11eecebe8aef9bb8a45117c32fb1a39bc9cfdc3  sub/config.json",
      "sums");
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].name, "config.json");
  EXPECT_EQ(e[0].algo, "md5");
  EXPECT_EQ(e[1].name, "bin mode.bin");
  EXPECT_EQ(e[1].hex, "0ba918a1ec3a2aa629178b581a9657a0");
  EXPECT_EQ(e[2].name, "x y.txt");
  EXPECT_EQ(e[3].algo, "sha256");
  auto err = [](const std::string& text) {
    try {
      parse_checksum_list(text, "sums.md5");
    } catch (const Error& ex) {
      return std::string(ex.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(err("0ba918a1ec3a2aa629178b581a9657a0  a\nnot a checksum\n"),
            "sums.md5: line 2: not a checksum line (expected 'HEX  name' with an md5 or sha256 digest)");
  EXPECT_NE(err("0ba918a1ec3a2aa6  short.bin").find("line 1"), std::string::npos);
  EXPECT_NE(err("MD5 (a) = e17b37c989262bbbf1acbae1b11eecebe8aef9bb8a45117c32fb1a39bc9cfdc3").find("wrong length"),
            std::string::npos);
}

TEST(XorDecode, DamagedOrIncompleteInputsFailCleanly) {
  test::TempDir tmp;
  const std::string payload = tmp / "payload", out = tmp / "out";
  copy_folder(kPayload, payload);
  std::string gz = test::read_bytes(payload + "/pytorch_model.bin");
  test::write_bytes(payload + "/pytorch_model.bin", gz.substr(0, gz.size() / 2));
  auto r = test::run_cli({"xor-decode", "--base", kBase, "--xor", payload, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("pytorch_model.bin: cannot decompress"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("corrupt or truncated gzip payload"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));

  test::write_bytes(payload + "/pytorch_model.bin", gz);
  test::write_bytes(payload + "/extra.bin", gzip("x"));
  r = test::run_cli({"xor-decode", "--base", kBase, "--xor", payload, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("extra.bin: gzip XOR payload has no same-named file in the base folder"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));

  r = test::run_cli({"xor-decode", "--base", tmp / "nope", "--xor", payload, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("base folder does not exist"), std::string::npos) << r.err;
  EXPECT_EQ(listing(tmp.path()), std::set<std::string>{"payload"});
}

// Runs the CLI directly (no shell) and returns its peak resident set in KiB.
long peak_rss_kib(const std::vector<std::string>& args, int* exit_code) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> argv;
    std::string bin = METHARME_BIN;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return ru.ru_maxrss;
}

TEST(XorDecode, MemoryDoesNotGrowWithFileSize) {
  test::TempDir tmp;
  const std::string base = tmp / "base", payload = tmp / "payload";
  fs::create_directories(base);
  fs::create_directories(payload);
  constexpr size_t kSize = 96u << 20, kChunk = 1u << 20;
  // A 96 MiB base and a target that differs from it in a few bytes per KiB (like a fine-tune).
  FILE* bf = std::fopen((base + "/pytorch_model.bin").c_str(), "wb");
  gzFile pf = gzopen((payload + "/pytorch_model.bin").c_str(), "wb1");
  ASSERT_TRUE(bf && pf);
  Digest want(Digest::Algo::kSha256);
  uint64_t seed = 7;
  for (size_t done = 0; done < kSize; done += kChunk) {
    std::string b = random_bytes(kChunk, ++seed), diff(kChunk, '\0');
    for (size_t i = 0; i < kChunk; i += 1024) diff[i] = char(1 + (i >> 10) % 200);
    std::string t = xor_pad(diff, b);
    std::fwrite(b.data(), 1, b.size(), bf);
    gzwrite(pf, diff.data(), unsigned(diff.size()));
    want.update(t.data(), t.size());
  }
  std::fclose(bf);
  gzclose(pf);
  int rc = -1;
  long idle = peak_rss_kib({"--version"}, &rc);
  ASSERT_EQ(rc, 0);
  long decode = peak_rss_kib({"xor-decode", "--base", base, "--xor", payload, "-o", tmp / "out"}, &rc);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(file_digest(tmp / "out/pytorch_model.bin", Digest::Algo::kSha256), want.hex());
  EXPECT_EQ(fs::file_size(tmp / "out/pytorch_model.bin"), kSize);
  // Streaming needs a few blocks of buffers, not the file: allow 32 MiB over the idle binary.
  EXPECT_LT(decode - idle, 32 * 1024) << "peak RSS " << decode << " KiB vs " << idle << " KiB idle";
}

}  // namespace
}  // namespace metharme
