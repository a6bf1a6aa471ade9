// Crafted files (issue 15): every size, offset, count and shape a file gives is checked before
// use. Each test builds the hostile bytes itself and expects one clear error naming the file, or,
// for repeated tensor references, bounded memory.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstring>
#include <fstream>
#include <functional>

#include "chat/conversation.h"
#include "formats/hf_config.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "formats/tensor.h"
#include "formats/tensor_store.h"
#include "formats/torch_checkpoint.h"
#include "formats/zip_reader.h"
#include "support/test_util.h"
#include "support/torch_writer.h"
#include "util/error.h"
#include "util/json.h"

namespace metharme {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_ERROR_HAS(fn, ...)                                                                 \
  do {                                                                                            \
    const std::string msg_ = error_of(fn);                                                        \
    for (const char* part : {__VA_ARGS__}) EXPECT_NE(msg_.find(part), std::string::npos) << msg_; \
  } while (0)

void put(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}
void patch(std::string& s, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s[at + size_t(i)] = char((v >> (8 * i)) & 0xFF);
}

// ---- zip ------------------------------------------------------------------------------------

// A local-header signature, then a ZIP64 locator whose record offset is near 2^64, then an EOCD
// (about 100 bytes in all): the offset used to wrap when the record's size was added to it, and
// the loader read far outside the mapping.
TEST(CraftedZip, Zip64LocatorOffsetNearTwoToThe64) {
  test::TempDir tmp;
  for (uint64_t z : {~uint64_t(0), ~uint64_t(0) - 40, uint64_t(1) << 63}) {
    std::string b;
    put(b, 0x04034b50, 4);
    b.append(60, '\0');     // room for a ZIP64 record before the locator, so only the offset is wrong
    put(b, 0x07064b50, 4);  // ZIP64 locator
    put(b, 0, 4);
    put(b, z, 8);
    put(b, 1, 4);
    put(b, 0x06054b50, 4);  // EOCD
    put(b, 0, 4);
    put(b, 0xFFFF, 2);
    put(b, 0xFFFF, 2);
    put(b, 0xFFFFFFFFu, 4);
    put(b, 0xFFFFFFFFu, 4);
    put(b, 0, 2);
    test::write_bytes(tmp / "z.pt", b);
    EXPECT_ERROR_HAS([&] { ZipReader r(tmp / "z.pt"); }, "z.pt", "ZIP64 end-of-central-directory record");
    EXPECT_ERROR_HAS(
        [&] {
          TensorStore s;
          add_torch_file(s, tmp / "z.pt");
        },
        "z.pt");
  }
}

// A valid ZIP64 archive whose extra field gives a local-header offset near 2^64.
TEST(CraftedZip, Zip64ExtraLocalOffsetWraps) {
  test::TempDir tmp;
  test::ZipOptions o;
  o.zip64 = true;
  o.align = 0;
  const std::string good = test::zip_bytes({{"a/data.pkl", "xyz"}}, o);
  const size_t cd = good.find("PK\x01\x02");
  ASSERT_NE(cd, std::string::npos);
  const size_t local_field = cd + 46 + std::strlen("a/data.pkl") + 4 + 16;  // size, compressed, then offset
  for (uint64_t local : {~uint64_t(0), ~uint64_t(0) - 29, uint64_t(good.size())}) {
    std::string b = good;
    patch(b, local_field, local, 8);
    test::write_bytes(tmp / "x.pt", b);
    EXPECT_ERROR_HAS([&] { ZipReader r(tmp / "x.pt"); }, "x.pt", "'a/data.pkl'", "local header missing");
  }
  test::write_bytes(tmp / "ok.pt", good);  // the unpatched archive reads
  ZipReader r(tmp / "ok.pt");
  std::vector<uint8_t> out;
  r.extract(*r.find("a/data.pkl"), out);
  EXPECT_EQ(std::string(out.begin(), out.end()), "xyz");
}

// ---- torch pickles --------------------------------------------------------------------------

// One transposed (strided) tensor over `rows` x `cols` floats, memoized, then referenced under
// `names` keys of the state dict.
std::string memo_bomb_pickle(const std::vector<std::string>& names, int rows, int cols) {
  test::Pickle p;
  p.proto().global("collections", "OrderedDict").op(')').reduce().mark();
  p.str(names[0]).global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(int64_t(rows) * cols).tuple();
  p.op('Q').integer(0).mark().integer(cols).integer(rows).tuple().mark().integer(1).integer(cols).tuple();
  p.op(0x89).global("collections", "OrderedDict").op(')').reduce().tuple().reduce();
  p.op('q').byte(1);                                                          // BINPUT 1: the tensor
  for (size_t i = 1; i < names.size(); ++i) p.str(names[i]).op('h').byte(1);  // BINGET 1
  return p.op('u').stop().bytes();
}

size_t peak_rss_kib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return size_t(u.ru_maxrss);
}

TEST(CraftedTorch, MemoReferencesToOneStridedTensorShareOneCopy) {
  test::TempDir tmp;
  const int rows = 64, cols = 256;  // 64 KiB of floats; a copy per reference would be 6.4 GB
  std::vector<float> w(size_t(rows) * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(i % 977) * 0.5f;
  std::vector<std::string> names;
  for (int i = 0; i < 100000; ++i) names.push_back("w" + std::to_string(i));
  test::write_bytes(tmp / "m.pt", test::torch_zip(memo_bomb_pickle(names, rows, cols), {{"0", test::floats_bytes(w)}}));
  const size_t before = peak_rss_kib();
  TensorStore s;
  add_torch_file(s, tmp / "m.pt");
  const size_t grown_mib = (peak_rss_kib() - before) / 1024;
  EXPECT_LT(grown_mib, 400u) << "peak RSS grew by " << grown_mib << " MiB";
  const TensorView* first = s.find("w0");
  const TensorView* last = s.find("w99999");
  ASSERT_TRUE(first && last);
  EXPECT_EQ(first->data, last->data);  // one shared copy
  ASSERT_EQ(first->shape, (std::vector<int64_t>{cols, rows}));
  const float* t = first->as<float>();  // the transpose: t[c][r] = w[r][c]
  for (int r = 0; r < rows; r += 7)
    for (int c = 0; c < cols; c += 5) ASSERT_EQ(t[size_t(c) * rows + size_t(r)], w[size_t(r) * cols + size_t(c)]);
}

TEST(CraftedTorch, RepeatedNameIsRefusedBeforeAnyCopy) {
  test::TempDir tmp;
  std::vector<float> w(64 * 256, 1.0f);
  std::vector<std::string> names(50000, "same.weight");
  test::write_bytes(tmp / "d.pt", test::torch_zip(memo_bomb_pickle(names, 64, 256), {{"0", test::floats_bytes(w)}}));
  const size_t before = peak_rss_kib();
  EXPECT_ERROR_HAS(
      [&] {
        TensorStore s;
        add_torch_file(s, tmp / "d.pt");
      },
      "d.pt", "tensor 'same.weight' appears more than once");
  EXPECT_LT((peak_rss_kib() - before) / 1024, 200u);
}

TEST(CraftedTorch, DistinctStridedViewsOfOneStorageAreBounded) {
  test::TempDir tmp;
  const int rows = 16, cols = 32;
  std::vector<test::FakeTensor> ts;
  for (int i = 0; i < 5; ++i) {  // five transposed views of the same storage: 5 copies > 2x its bytes
    test::FakeTensor t;
    t.name = "t" + std::to_string(i);
    t.storage_numel = rows * cols;
    t.shape = {cols, rows};
    t.stride = {1, cols};
    ts.push_back(t);
  }
  const std::string data = test::floats_bytes(std::vector<float>(size_t(rows) * cols, 2.0f));
  test::write_bytes(tmp / "v.pt", test::torch_zip(test::state_dict_pickle(ts), {{"0", data}}));
  EXPECT_ERROR_HAS(
      [&] {
        TensorStore s;
        add_torch_file(s, tmp / "v.pt");
      },
      "v.pt", "tensor 't2'", "more memory");
  ts.resize(2);  // two views (e.g. a tied, transposed weight) still load
  test::write_bytes(tmp / "v2.pt", test::torch_zip(test::state_dict_pickle(ts), {{"0", data}}));
  TensorStore s;
  add_torch_file(s, tmp / "v2.pt");
  ASSERT_NE(s.find("t1"), nullptr);
  EXPECT_EQ(s.find("t1")->as<float>()[17], 2.0f);
}

TEST(CraftedTorch, OrderedDictOfAHugeListRepeatedIsRefused) {
  // OrderedDict(list) copies the list: one big memoized list and many REDUCEs of a few bytes.
  test::Pickle q;
  q.proto().op(']').mark();
  for (int i = 0; i < 100000; ++i) q.op('N').op('N').op(0x86);  // (None, None) pairs
  q.op('e').op('q').byte(1);                                    // the list, memo 1
  q.op(']').mark();
  for (int i = 0; i < 200; ++i) q.global("collections", "OrderedDict").op('h').byte(1).op(0x85).reduce();
  const std::string bytes = q.op('e').stop().bytes();
  test::TempDir tmp;
  test::write_bytes(tmp / "o.pt", test::torch_zip(bytes, {}));
  EXPECT_ERROR_HAS(
      [&] {
        TensorStore s;
        add_torch_file(s, tmp / "o.pt");
      },
      "o.pt", "OrderedDict", "items copied");
}

// ---- safetensors ----------------------------------------------------------------------------

void write_st(const std::string& path, const std::string& header, const std::string& data = "") {
  std::string b;
  put(b, header.size(), 8);
  test::write_bytes(path, b + header + data);
}

TEST(CraftedSafetensors, ShapeProductOverflowIsRefused) {
  test::TempDir tmp;
  const char* shapes[] = {"[4294967296, 4294967296]", "[1099511627776, 1099511627776, 0]", "[281474976710657]",
                          "[65536, 65536, 65537]", "[18446744073709551615]"};
  for (const char* shape : shapes) {
    write_st(tmp / "s.safetensors", cat(R"({"w":{"dtype":"F32","shape":)", shape, R"(,"data_offsets":[0,0]}})"));
    SCOPED_TRACE(shape);
    EXPECT_ERROR_HAS([&] { SafetensorsFile f(tmp / "s.safetensors"); }, "s.safetensors", "tensor 'w'", "2^48");
  }
  // An empty tensor with a large (but bounded) other dimension is fine.
  write_st(tmp / "e.safetensors", R"({"w":{"dtype":"F32","shape":[0, 1000000],"data_offsets":[0,0]}})");
  SafetensorsFile f(tmp / "e.safetensors");
  EXPECT_EQ(f.tensors().at(0).numel(), 0);
}

TEST(CraftedSafetensors, MisalignedTensorsAreCopiedAligned) {
  // A header of odd length puts the data at an odd offset; the views must still be aligned.
  test::TempDir tmp;
  std::string data;
  data.push_back('\x7f');  // one U8 byte first, so the F64 and I32 after it are misaligned too
  const double d[2] = {0.25, -8.5};
  const int32_t i[3] = {7, -1, 1 << 30};
  data.append(reinterpret_cast<const char*>(d), sizeof d);
  data.append(reinterpret_cast<const char*>(i), sizeof i);
  std::string header =
      R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"d":{"dtype":"F64","shape":[2],"data_offsets":[1,17]},)"
      R"("i":{"dtype":"I32","shape":[3],"data_offsets":[17,29]}})";
  while (header.size() % 8 != 2) header.push_back(' ');  // "d" then starts at 3 mod 8, "i" at 3 mod 4
  write_st(tmp / "m.safetensors", header, data);
  SafetensorsFile f(tmp / "m.safetensors");
  const TensorView* dv = f.find("d");
  const TensorView* iv = f.find("i");
  ASSERT_TRUE(dv && iv);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(dv->data) % 8, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(iv->data) % 4, 0u);
  EXPECT_EQ(dv->as<double>()[1], -8.5);
  EXPECT_EQ(iv->as<int32_t>()[2], 1 << 30);
  EXPECT_EQ(tensor_to_f32(*dv), (std::vector<float>{0.25f, -8.5f}));
  EXPECT_EQ(f.find("b")->data[0], 0x7f);
}

TEST(CraftedSafetensors, HugeJsonNumberNamesTheFile) {
  test::TempDir tmp;
  write_st(tmp / "n.safetensors", R"({"w":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}})", "abcd");
  EXPECT_ERROR_HAS([&] { SafetensorsFile f(tmp / "n.safetensors"); }, "n.safetensors", "not valid JSON", "1e400");
  write_st(tmp / "r.safetensors", R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "abcd");
  EXPECT_ERROR_HAS([&] { SafetensorsFile f(tmp / "r.safetensors"); }, "r.safetensors", "non-integer");
  write_st(tmp / "h.safetensors", std::string(R"({"w":)") + std::string(200, ' '), "");  // truncated JSON
  EXPECT_ERROR_HAS([&] { SafetensorsFile f(tmp / "h.safetensors"); }, "h.safetensors", "not valid JSON");
}

TEST(CraftedSafetensors, IndexWithHugeNumberNamesTheIndex) {
  test::TempDir tmp;
  std::filesystem::create_directories(tmp / "m");
  test::write_bytes(tmp / "m/model.safetensors.index.json", R"({"metadata":{"total_size":1e400},"weight_map":{}})");
  EXPECT_ERROR_HAS([&] { TensorStore::open_folder(tmp / "m"); }, "model.safetensors.index.json", "not valid JSON");
  std::filesystem::create_directories(tmp / "t");
  test::write_bytes(tmp / "t/pytorch_model.bin.index.json", R"({"metadata":{"total_size":-1e999},"weight_map":{}})");
  EXPECT_ERROR_HAS([&] { TensorStore::open_folder(tmp / "t"); }, "pytorch_model.bin.index.json", "not valid JSON");
}

// ---- npy ------------------------------------------------------------------------------------

std::string npy(const std::string& shape, const std::string& data, const char* descr = "<f4") {
  std::string h = cat("{'descr': '", descr, "', 'fortran_order': False, 'shape': ", shape, ", }");
  h.push_back('\n');
  std::string b = "\x93NUMPY";
  b.push_back(1);
  b.push_back(0);
  put(b, h.size(), 2);
  return b + h + data;
}

TEST(CraftedNpy, ElementCountOverflowIsRefused) {
  const struct {
    const char* shape;
    const char* why;
  } cases[] = {
      {"(4611686018427387904,)", "dimension above 2^48"},            // 2^62 x 4 bytes wrapped to 0 bytes
      {"(99999999999999999999999999999,)", "dimension above 2^48"},  // used to throw a bare "stoll"
      {"(1073741824, 1073741824)", "more than 2^48 elements"},
      {"(4294967296, 4294967296, 0)", "more than 2^48 elements"},
  };
  for (const auto& c : cases) EXPECT_ERROR_HAS([&] { parse_npy(npy(c.shape, ""), "x.npy"); }, "x.npy", c.why);
  NpyArray a = parse_npy(npy("(2, 0)", ""), "e.npy");  // empty arrays read
  EXPECT_EQ(a.numel(), 0);
  a = parse_npy(npy("(3,)", std::string("\x01\0\0\0\x02\0\0\0\x03\0\0\0", 12), "<i4"), "i.npy");
  EXPECT_EQ(a.to_i64(), (std::vector<int64_t>{1, 2, 3}));
  test::TempDir tmp;
  test::write_bytes(tmp / "big.npy", npy("(4611686018427387904,)", ""));
  EXPECT_ERROR_HAS([&] { read_npy(tmp / "big.npy"); }, "big.npy", "2^48");
}

// ---- config.json ----------------------------------------------------------------------------

nlohmann::json base_config() {
  return {{"hidden_size", 64},      {"intermediate_size", 128}, {"num_attention_heads", 4},
          {"num_hidden_layers", 2}, {"vocab_size", 512},        {"rms_norm_eps", 1e-5}};
}

TEST(CraftedConfig, OutOfRangeValuesAreRefused) {
  EXPECT_NO_THROW(parse_llama_config(base_config(), "config.json"));
  const struct {
    const char* key;
    nlohmann::json value;
    const char* why;
  } cases[] = {
      {"rms_norm_eps", -1, "'rms_norm_eps' = -1 is out of range"},
      {"rms_norm_eps", 0, "'rms_norm_eps' = 0 is out of range"},
      {"rope_theta", -10000.0, "'rope_theta'"},
      {"num_attention_heads", 1 << 30, "'num_attention_heads'"},
      {"hidden_size", 1 << 30, "'hidden_size'"},
      {"head_dim", 1 << 30, "'head_dim'"},
      {"head_dim", 3, "even"},
      {"num_attention_heads", 3, "not a multiple of num_attention_heads"},
      {"num_key_value_heads", 3, "not a multiple of num_key_value_heads"},
      {"num_key_value_heads", 0, "'num_key_value_heads' = 0"},
      {"vocab_size", uint64_t(1) << 63, "'vocab_size'"},
      {"num_hidden_layers", -2, "'num_hidden_layers' = -2"},
      {"max_position_embeddings", int64_t(1) << 40, "'max_position_embeddings'"},
      {"eos_token_id", -5, "'eos_token_id' = -5 is not a valid token id"},
      {"bos_token_id", uint64_t(1) << 40, "'bos_token_id'"},
  };
  for (const auto& c : cases) {
    nlohmann::json j = base_config();
    j[c.key] = c.value;
    SCOPED_TRACE(c.key);
    EXPECT_ERROR_HAS([&] { parse_llama_config(j, "cfg/config.json"); }, "cfg/config.json", c.why);
  }
  nlohmann::json j = base_config();  // heads x head_dim that would overflow int
  j["num_attention_heads"] = 4096;
  j["hidden_size"] = 4096;
  j["head_dim"] = 1024;
  EXPECT_ERROR_HAS([&] { parse_llama_config(j, "config.json"); }, "implausibly large");
}

TEST(CraftedConfig, HugeJsonNumberNamesTheFile) {
  test::TempDir tmp;
  std::string text = base_config().dump();
  text.insert(1, "\"rope_theta\": 1e400, ");
  test::write_bytes(tmp / "config.json", text);
  EXPECT_ERROR_HAS([&] { load_llama_config(tmp.path()); }, "config.json", "not valid JSON", "out of range");
  test::write_bytes(tmp / "config.json", base_config().dump());
  test::write_bytes(tmp / "quantize_config.json", R"({"bits": 4, "group_size": 1e999})");
  EXPECT_ERROR_HAS([&] { load_llama_config(tmp.path()); }, "quantize_config.json", "not valid JSON");
}

// ---- conversations and other JSON ------------------------------------------------------------

TEST(CraftedJson, ConversationWithHugeNumberNamesTheFile) {
  EXPECT_ERROR_HAS([] { conversation_from_json(R"({"version": 1e400, "messages": []})", "talk.json"); }, "talk.json",
                   "not valid JSON", "1e400");
  EXPECT_ERROR_HAS([] { conversation_from_json("{\"messages\": [\"\xff\"]}", "talk.json"); }, "talk.json",
                   "not valid JSON");
  EXPECT_ERROR_HAS([] { parse_json("[1, 2", "x.json"); }, "x.json: not valid JSON");
  EXPECT_EQ(parse_json("[1e308]", "x.json")[0].get<double>(), 1e308);
}

// ---- conversions over unaligned bytes ---------------------------------------------------------

TEST(CraftedBytes, UnalignedTensorsConvert) {
  // Tensor bytes in a file need not be aligned to their element size.
  alignas(8) uint8_t buf[8 * 5 + 1];
  const double d[4] = {1.5, -2.25, 3e10, 0.0};
  std::memcpy(buf + 1, d, sizeof d);
  TensorView t;
  t.name = "d";
  t.dtype = DType::F64;
  t.shape = {2, 2};
  t.data = buf + 1;
  t.nbytes = sizeof d;
  std::vector<float> f = tensor_to_f32(t);
  EXPECT_EQ(f, (std::vector<float>{1.5f, -2.25f, 3e10f, 0.0f}));
  const uint16_t h[3] = {0x3C00, 0xC000, 0x3800};  // fp16 1, -2, 0.5
  std::memcpy(buf + 1, h, sizeof h);
  t.dtype = DType::F16;
  t.shape = {3};
  t.nbytes = sizeof h;
  EXPECT_EQ(tensor_to_f32(t), (std::vector<float>{1.0f, -2.0f, 0.5f}));
  t.dtype = DType::F32;  // an empty tensor with no bytes at all
  t.shape = {0};
  t.data = nullptr;
  t.nbytes = 0;
  EXPECT_TRUE(tensor_to_f32(t).empty());
}

}  // namespace
}  // namespace metharme
