// The GGUF reader: every metadata value type, tensor infos and views, the SentencePiece
// vocabulary built from tokenizer.ggml.*, and hostile files (truncated at every byte, mutated,
// lying counts and offsets) that must fail with an Error naming the file, never crash.
#include "formats/gguf_reader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "formats/gguf.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme {
namespace {

// Builds GGUF bytes by hand (any version, any value type, arbitrary offsets).
struct Builder {
  std::string kv, infos, data;
  uint64_t n_kv = 0, n_tensors = 0;
  uint32_t version = 3;
  size_t align = 32;

  template <class T>
  static void raw(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static void str(std::string& s, const std::string& v) {
    raw(s, uint64_t(v.size()));
    s += v;
  }
  void key(const std::string& k, GgufType t) {
    str(kv, k);
    raw(kv, uint32_t(t));
    ++n_kv;
  }
  template <class T>
  void scalar(const std::string& k, GgufType t, T v) {
    key(k, t);
    raw(kv, v);
  }
  void string(const std::string& k, const std::string& v) {
    key(k, GgufType::kStr);
    str(kv, v);
  }
  template <class T>
  void array(const std::string& k, GgufType et, const std::vector<T>& v) {
    key(k, GgufType::kArr);
    raw(kv, uint32_t(et));
    raw(kv, uint64_t(v.size()));
    for (const T& x : v) raw(kv, x);
  }
  void str_array(const std::string& k, const std::vector<std::string>& v) {
    key(k, GgufType::kArr);
    raw(kv, uint32_t(GgufType::kStr));
    raw(kv, uint64_t(v.size()));
    for (const auto& x : v) str(kv, x);
  }
  // A tensor whose bytes are appended to the data section at the next aligned offset.
  void tensor(const std::string& name, GgmlType t, std::vector<uint64_t> dims, const std::string& bytes) {
    while (data.size() % align) data.push_back('\0');
    str(infos, name);
    raw(infos, uint32_t(dims.size()));
    for (uint64_t d : dims) raw(infos, d);
    raw(infos, uint32_t(t));
    raw(infos, uint64_t(data.size()));
    data += bytes;
    ++n_tensors;
  }
  std::string bytes() const {
    std::string s = "GGUF";
    raw(s, version);
    raw(s, n_tensors);
    raw(s, n_kv);
    s += kv;
    s += infos;
    while (s.size() % align) s.push_back('\0');
    return s + data;
  }
};

std::string write(const test::TempDir& dir, const std::string& name, const std::string& bytes) {
  std::string p = dir / name;
  std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  return p;
}

Builder sample() {
  Builder b;
  b.scalar("t.u8", GgufType::kU8, uint8_t(200));
  b.scalar("t.i8", GgufType::kI8, int8_t(-5));
  b.scalar("t.u16", GgufType::kU16, uint16_t(60000));
  b.scalar("t.i16", GgufType::kI16, int16_t(-30000));
  b.scalar("t.u32", GgufType::kU32, uint32_t(4000000000u));
  b.scalar("t.i32", GgufType::kI32, int32_t(-7));
  b.scalar("t.f32", GgufType::kF32, 0.5f);
  b.scalar("t.bool", GgufType::kBool, uint8_t(1));
  b.string("t.str", "héllo");
  b.scalar("t.u64", GgufType::kU64, uint64_t(1) << 40);
  b.scalar("t.i64", GgufType::kI64, int64_t(-1) << 40);
  b.scalar("t.f64", GgufType::kF64, 2.25);
  b.array<int16_t>("t.arr_i16", GgufType::kI16, {-1, 2, -3});
  b.array<float>("t.arr_f32", GgufType::kF32, {1.0f, -2.5f});
  b.array<double>("t.arr_f64", GgufType::kF64, {0.125});
  b.array<uint8_t>("t.arr_bool", GgufType::kBool, {1, 0});
  b.str_array("t.arr_str", {"a", "", "ccc"});
  // An array of two arrays of u8 (decoded as a count only).
  b.key("t.nested", GgufType::kArr);
  Builder::raw(b.kv, uint32_t(GgufType::kArr));
  Builder::raw(b.kv, uint64_t(2));
  for (int k = 0; k < 2; ++k) {
    Builder::raw(b.kv, uint32_t(GgufType::kU8));
    Builder::raw(b.kv, uint64_t(3));
    b.kv += "xyz";
  }
  std::string f16(2 * 6, '\0');
  for (int i = 0; i < 6; ++i) {
    uint16_t h = f32_to_fp16(float(i) - 2.0f);
    std::memcpy(&f16[size_t(2 * i)], &h, 2);
  }
  b.tensor("w.f16", GgmlType::kF16, {3, 2}, f16);
  b.tensor("w.q8", GgmlType::kQ8_0, {32}, std::string(34, '\1'));
  return b;
}

TEST(GgufReader, EveryValueTypeV3) {
  test::TempDir dir;
  GgufFile f(write(dir, "a.gguf", sample().bytes()));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_uint("t.u8"), 200u);
  EXPECT_EQ(f.get_int("t.i8", 0), -5);
  EXPECT_EQ(f.get_uint("t.u16"), 60000u);
  EXPECT_EQ(f.get_int("t.i16", 0), -30000);
  EXPECT_EQ(f.get_uint("t.u32"), 4000000000u);
  EXPECT_EQ(f.get_int("t.i32", 0), -7);
  EXPECT_EQ(f.get_float("t.f32", 0), 0.5);
  EXPECT_TRUE(f.get_bool("t.bool", false));
  EXPECT_EQ(f.get_str("t.str"), "héllo");
  EXPECT_EQ(f.get_uint("t.u64"), uint64_t(1) << 40);
  EXPECT_EQ(f.get_int("t.i64", 0), -(int64_t(1) << 40));
  EXPECT_EQ(f.get_float("t.f64", 0), 2.25);
  EXPECT_EQ(f.get_i32_array("t.arr_i16"), (std::vector<int32_t>{-1, 2, -3}));
  EXPECT_EQ(f.get_f32_array("t.arr_f32"), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(f.get_f32_array("t.arr_f64"), (std::vector<float>{0.125f}));
  EXPECT_EQ(f.get_i32_array("t.arr_bool"), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(f.get_str_array("t.arr_str"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.find("t.nested")->count, 2u);
  EXPECT_EQ(f.find("t.nested")->elem, GgufType::kArr);
  // Defaults and type errors.
  EXPECT_EQ(f.get_uint("absent", 9), 9u);
  EXPECT_THROW(f.get_uint("absent"), Error);
  EXPECT_THROW(f.get_str("t.u8"), Error);
  EXPECT_THROW(f.get_uint("t.i8", 0), Error);  // negative
  EXPECT_THROW(f.get_bool("t.u8", false), Error);
  EXPECT_THROW(f.get_str_array("t.arr_f32"), Error);
  // Tensors: dims innermost first, views row-major, data inside the mapping at aligned offsets.
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo& t = f.tensor("w.f16");
  EXPECT_EQ(t.dims, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(t.nbytes, 12u);
  TensorView v = f.view(t);
  EXPECT_EQ(v.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tensor_to_f32(v), (std::vector<float>{-2, -1, 0, 1, 2, 3}));
  EXPECT_EQ((f.data_offset() + f.tensor("w.q8").offset) % 32, 0u);
  EXPECT_EQ(f.tensor("w.q8").nbytes, 34u);
  EXPECT_THROW(f.view(f.tensor("w.q8")), Error);
  EXPECT_THROW(f.tensor("nope"), Error);
}

TEST(GgufReader, Version2AndCustomAlignment) {
  test::TempDir dir;
  Builder b;
  b.version = 2;
  b.align = 64;
  b.scalar("general.alignment", GgufType::kU32, uint32_t(64));
  b.tensor("a", GgmlType::kF32, {1}, std::string(4, '\0'));
  b.tensor("b", GgmlType::kF32, {2}, std::string(8, '\0'));
  GgufFile f(write(dir, "v2.gguf", b.bytes()));
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.tensor("b").offset, 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
}

// Expects opening `bytes` to fail with a message containing the file name and `what`.
void expect_error(const std::string& bytes, const std::string& what) {
  test::TempDir dir;
  std::string p = write(dir, "bad.gguf", bytes);
  try {
    GgufFile f(p);
    ADD_FAILURE() << "no error, expected: " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(GgufReader, ClearErrors) {
  Builder b = sample();
  std::string good = b.bytes();
  expect_error("GGML" + good.substr(4), "not a GGUF file");
  Builder v1 = b;
  v1.version = 1;
  expect_error(v1.bytes(), "version 1");
  Builder be = b;
  be.version = 0x03000000;
  expect_error(be.bytes(), "big-endian");
  Builder iq;
  iq.tensor("blk.0.attn_q.weight", GgmlType(16), {256}, std::string(66, '\0'));
  expect_error(iq.bytes(), "IQ2_XXS");
  Builder rowlen;
  rowlen.tensor("x", GgmlType::kQ4_0, {48}, std::string(36, '\0'));
  expect_error(rowlen.bytes(), "not a multiple of the Q4_0 block");
  Builder past;
  past.tensor("x", GgmlType::kF32, {1000}, std::string(16, '\0'));
  expect_error(past.bytes(), "past the end");
  Builder dup;
  dup.string("k", "a");
  dup.string("k", "b");
  expect_error(dup.bytes(), "appears twice");
  Builder huge;
  huge.key("arr", GgufType::kArr);
  Builder::raw(huge.kv, uint32_t(GgufType::kU64));
  Builder::raw(huge.kv, uint64_t(1) << 61);
  expect_error(huge.bytes(), "more than the file holds");
  Builder dims;
  dims.tensor("x", GgmlType::kF32, {uint64_t(1) << 40, uint64_t(1) << 40}, "");
  expect_error(dims.bytes(), "too large");
  Builder align;
  align.scalar("general.alignment", GgufType::kU32, uint32_t(24));
  expect_error(align.bytes(), "power of two");
  expect_error(good.substr(0, 10), "truncated");
  expect_error(good.substr(0, 100), "exceeds what the file can hold");
}

// Every prefix of a valid file, and many mutated copies, either parse or throw Error: no crash,
// no hang, no unbounded allocation (the sanitizer build checks the memory accesses).
TEST(GgufReader, TruncatedAndMutatedFilesFailCleanly) {
  test::TempDir dir;
  const std::string good = sample().bytes();
  for (size_t n = 0; n < good.size(); ++n) {
    std::string p = write(dir, "t.gguf", good.substr(0, n));
    EXPECT_THROW(GgufFile{p}, Error) << "prefix of " << n << " bytes";
  }
  std::mt19937 rng(7);
  int parsed = 0;
  for (int it = 0; it < 1000; ++it) {
    std::string m = good;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = char(rng() % 256);
    std::string p = write(dir, "m.gguf", m);
    try {
      GgufFile f(p);
      unsigned sum = 0;  // touch every tensor byte: out-of-file views would fault or trip ASan
      for (const auto& t : f.tensors())
        for (size_t k = 0; k < t.nbytes; ++k) sum += t.data[k];
      (void)sum;
      ++parsed;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(parsed, 0);  // most flips land in data and values, which stay valid
}

// The LLaMA tokenizer.model's vocabulary written into GGUF keys tokenizes every golden text
// exactly as the original model does.
TEST(GgufTokenizer, MatchesSentencePieceModel) {
  Tokenizer ref(test::fixture("tokenizer/llama/tokenizer.model"));
  test::TempDir dir;
  std::string path = dir / "vocab.gguf";
  {
    GgufWriter w(path);
    std::vector<std::string> pieces;
    std::vector<float> scores;
    std::vector<int32_t> types;
    for (int id = 0; id < ref.vocab_size(); ++id) {
      pieces.push_back(ref.piece(id));
      scores.push_back(ref.score(id));
      types.push_back(ref.is_unknown(id) ? 2 : ref.is_control(id) ? 3 : ref.is_byte(id) ? 6 : 1);
    }
    w.set_str("general.architecture", "llama");
    w.set_str("tokenizer.ggml.model", "llama");
    w.set_str_array("tokenizer.ggml.tokens", pieces);
    w.set_f32_array("tokenizer.ggml.scores", scores);
    w.set_i32_array("tokenizer.ggml.token_type", types);
    w.set_u32("tokenizer.ggml.bos_token_id", 1);
    w.set_u32("tokenizer.ggml.eos_token_id", 2);
    w.set_u32("tokenizer.ggml.unknown_token_id", 0);
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.commit();
  }
  Tokenizer tok = Tokenizer::from_folder(path);
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_TRUE(tok.add_bos());
  auto records = test::read_jsonl(test::fixture("tokenizer/llama/golden_tokenization.jsonl"));
  ASSERT_GT(records.size(), 50u);
  for (const auto& r : records) {
    std::string text = r["text"];
    std::vector<int> want = r["ids"];
    EXPECT_EQ(tok.encode(text, false), want) << r["text"].dump();
    EXPECT_EQ(tok.decode(want), std::string(r["decoded"])) << r["text"].dump();
  }
}

TEST(GgufTokenizer, RefusesOtherVocabularies) {
  test::TempDir dir;
  Builder b;
  b.string("tokenizer.ggml.model", "gpt2");
  b.str_array("tokenizer.ggml.tokens", {"a", "b"});
  std::string p = write(dir, "gpt2.gguf", b.bytes());
  try {
    Tokenizer::from_gguf(p);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gpt2"), std::string::npos) << e.what();
  }
  Builder c;
  c.string("tokenizer.ggml.model", "llama");
  c.str_array("tokenizer.ggml.tokens", {"<unk>", "a"});
  c.array<int32_t>("tokenizer.ggml.token_type", GgufType::kI32, {2, 1});
  c.scalar("tokenizer.ggml.bos_token_id", GgufType::kU32, uint32_t(7));
  p = write(dir, "badid.gguf", c.bytes());
  EXPECT_THROW(Tokenizer::from_gguf(p), Error);
}

}  // namespace
}  // namespace metharme
