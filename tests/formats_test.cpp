// File readers and writers: safetensors validation, HF folders, npy; every bad input is a clear
// one-line error naming the file and the problem, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "formats/hf_config.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "formats/tensor_store.h"
#include "model/weights.h"
#include "support/test_util.h"
#include "util/error.h"
#include "util/fs.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;

// A safetensors file from a JSON header text and a data blob.
void write_raw_st(const std::string& path, const std::string& header, const std::string& data, int64_t len_override = -1) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = len_override >= 0 ? uint64_t(len_override) : header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << data;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

void expect_error(const std::function<void()>& fn, std::initializer_list<const char*> parts) {
  std::string msg = error_of(fn);
  for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
}

TEST(Safetensors, ReadsFixtureZeroCopy) {
  SafetensorsFile f(test::fixture("models/stories260k/model.safetensors"));
  const TensorView* t = f.find("model.embed_tokens.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::F32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(t->nbytes, 512u * 64 * 4);
}

TEST(Safetensors, WriterRoundTripsEveryDtype) {
  test::TempDir tmp;
  std::string path = tmp / "t.safetensors";
  std::vector<float> f32 = {1.5f, -2.f, 3.25f};
  std::vector<uint16_t> f16 = {0x3C00, 0xC000};
  std::vector<int32_t> i32 = {7, -9, 11, 13};
  std::vector<int64_t> i64 = {1ll << 40};
  std::vector<uint8_t> u8 = {1, 2, 255};
  {
    SafetensorsWriter w(path);
    w.set_metadata("format", "pt");
    w.declare("a", DType::F32, {3});
    w.declare("b", DType::F16, {2, 1});
    w.declare("c", DType::I32, {2, 2});
    w.declare("d", DType::I64, {1});
    w.declare("e", DType::U8, {3});
    w.declare("empty", DType::BF16, {0, 4});
    w.write_tensor("a", f32.data());
    w.write_tensor("b", f16.data());
    w.write_tensor("c", i32.data());
    w.write_tensor("d", i64.data());
    w.write_tensor("e", u8.data());
    w.write_tensor("empty", nullptr);
    w.commit();
  }
  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(std::memcmp(f.find("a")->data, f32.data(), 12), 0);
  EXPECT_EQ(f.find("b")->shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(std::memcmp(f.find("c")->data, i32.data(), 16), 0);
  EXPECT_EQ(std::memcmp(f.find("d")->data, i64.data(), 8), 0);
  EXPECT_EQ(std::memcmp(f.find("e")->data, u8.data(), 3), 0);
  EXPECT_EQ(f.find("empty")->nbytes, 0u);
  EXPECT_EQ(tensor_to_f32(*f.find("b")), (std::vector<float>{1.f, -2.f}));
}

TEST(Safetensors, BadFilesGiveClearErrors) {
  test::TempDir tmp;
  std::string p = tmp / "bad.safetensors";
  const std::string ok_hdr = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

  std::ofstream(p, std::ios::binary) << "abc";
  expect_error([&] { SafetensorsFile f(p); }, {"bad.safetensors", "need at least 8"});

  write_raw_st(p, ok_hdr, std::string(8, '\0'), 4096);
  expect_error([&] { SafetensorsFile f(p); }, {"bad.safetensors", "header length 4096 runs past the end"});

  write_raw_st(p, ok_hdr, std::string(8, '\0'), int64_t(1) << 40);
  expect_error([&] { SafetensorsFile f(p); }, {"implausible"});

  write_raw_st(p, "{\"w\": [", "");
  expect_error([&] { SafetensorsFile f(p); }, {"bad.safetensors", "not valid JSON"});

  write_raw_st(p, ok_hdr, std::string(4, '\0'));  // truncated data
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "run past the end of the data"});

  write_raw_st(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "data_offsets [8, 16]"});

  write_raw_st(p, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "byte size 8 does not match dtype F32 x shape [3] = 12"});

  write_raw_st(p, R"({"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "unsupported dtype 'Q4_K'"});

  write_raw_st(p,
               R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               std::string(12, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"'a' and 'b' overlap"});

  write_raw_st(p, R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "negative"});

  write_raw_st(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "reversed"});

  expect_error([&] { SafetensorsFile f(tmp / "missing.safetensors"); }, {"missing.safetensors", "cannot open"});
}

// A copy of stories260k whose model.safetensors is rewritten by `edit` (drop or change tensors).
std::string edited_copy(const test::TempDir& tmp, const std::function<bool(const TensorView&, SafetensorsWriter&)>& edit) {
  std::string dir = tmp / "model";
  fs::create_directories(dir);
  std::string src = test::fixture("models/stories260k");
  for (const char* f : {"config.json", "tokenizer.model"}) fs::copy_file(src + "/" + f, dir + "/" + f);
  SafetensorsFile in(src + "/model.safetensors");
  SafetensorsWriter w(dir + "/model.safetensors");
  std::vector<const TensorView*> kept;
  for (const auto& t : in.tensors())
    if (edit(t, w)) {
      w.declare(t.name, t.dtype, t.shape);
      kept.push_back(&t);
    }
  for (const auto* t : kept) w.write_tensor(t->name, t->data);
  w.commit();
  return dir;
}

TEST(ModelFolder, MissingTensorIsNamed) {
  test::TempDir tmp;
  std::string dir = edited_copy(tmp, [](const TensorView& t, SafetensorsWriter&) {
    return t.name != "model.layers.3.mlp.up_proj.weight";
  });
  expect_error([&] { load_weights(dir); }, {"missing tensor 'model.layers.3.mlp.up_proj"});
  auto r = test::run_cli({"generate", "-m", dir, "-n", "2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: "), std::string::npos);
  EXPECT_NE(r.err.find("model.layers.3.mlp.up_proj"), std::string::npos) << r.err;
}

TEST(ModelFolder, WrongShapeIsNamed) {
  test::TempDir tmp;
  std::vector<float> bogus(64 * 3, 0.f);
  std::string dir = edited_copy(tmp, [&](const TensorView& t, SafetensorsWriter&) { return t.name != "model.norm.weight"; });
  // Add a wrongly shaped final norm through a second file.
  {
    SafetensorsWriter w(dir + "/extra.safetensors");
    w.declare("model.norm.weight", DType::F32, {3, 64});
    w.write_tensor("model.norm.weight", bogus.data());
    w.commit();
  }
  expect_error([&] { load_weights(dir); }, {"extra.safetensors", "'model.norm.weight' has shape [3, 64], expected [64]"});
}

TEST(ModelFolder, DuplicateTensorAcrossFilesIsAnError) {
  test::TempDir tmp;
  std::string dir = edited_copy(tmp, [](const TensorView&, SafetensorsWriter&) { return true; });
  fs::copy_file(dir + "/model.safetensors", dir + "/copy.safetensors");
  expect_error([&] { TensorStore::open_folder(dir); }, {"appears twice"});
}

TEST(ModelFolder, ConfigProblemsAreNamed) {
  test::TempDir tmp;
  std::string dir = edited_copy(tmp, [](const TensorView&, SafetensorsWriter&) { return true; });
  auto cfg = test::read_json(dir + "/config.json");
  auto broken = cfg;
  broken.erase("num_attention_heads");
  write_file_atomic(dir + "/config.json", broken.dump());
  expect_error([&] { load_weights(dir); }, {"config.json", "missing required field 'num_attention_heads'"});
  broken = cfg;
  broken["hidden_size"] = "64";
  write_file_atomic(dir + "/config.json", broken.dump());
  expect_error([&] { load_weights(dir); }, {"field 'hidden_size' must be an integer"});
  write_file_atomic(dir + "/config.json", "{not json");
  expect_error([&] { load_weights(dir); }, {"config.json", "not valid JSON"});
  fs::remove(dir + "/config.json");
  expect_error([&] { load_weights(dir); }, {"no config.json"});
  expect_error([&] { load_weights(tmp / "nope"); }, {"nope", "does not exist"});
}

TEST(ModelFolder, ShardedIndexProblemsAreNamed) {
  test::TempDir tmp;
  std::string dir = tmp / "m";
  fs::create_directories(dir);
  std::string src = test::fixture("models/llama-rand-h256-gqa");
  for (const auto& e : fs::directory_iterator(src)) fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
  fs::remove(dir + "/model-00002-of-00002.safetensors");
  expect_error([&] { TensorStore::open_folder(dir); }, {"model-00002-of-00002.safetensors", "not in the folder"});
}

TEST(ModelFolder, CliReportsCorruptionInOneLineWithoutCrashing) {
  test::TempDir tmp;
  std::string dir = edited_copy(tmp, [](const TensorView&, SafetensorsWriter&) { return true; });
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 100);
  for (const auto& cmd : {std::vector<std::string>{"generate", "-m", dir, "-n", "1"}, {"info", "-m", dir}}) {
    auto r = test::run_cli(cmd);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find("run past the end of the data"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST(Npy, RoundTripAndFixture) {
  test::TempDir tmp;
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  write_npy(tmp / "a.npy", DType::F32, {2, 3}, v.data());
  NpyArray a = read_npy(tmp / "a.npy");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.to_f32(), v);
  NpyArray c = read_npy(test::fixture("gptq/calibration_ids.npy"));
  EXPECT_EQ(c.dtype, DType::I32);
  EXPECT_EQ(c.shape, (std::vector<int64_t>{32, 128}));
  std::ofstream(tmp / "bad.npy") << "\x93NUMPY junk";
  expect_error([&] { read_npy(tmp / "bad.npy"); }, {"bad.npy"});
}

}  // namespace
}  // namespace metharme
