// PyTorch checkpoints: the torch/ fixtures give the same tensors and logits as their safetensors
// twins; the restricted unpickler refuses code; damaged files give clear errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "formats/tensor_store.h"
#include "formats/torch_checkpoint.h"
#include "formats/torch_pickle.h"
#include "formats/zip_reader.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "support/torch_writer.h"
#include "util/error.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;

// The 128-token sequence of stories260k's golden prompt 1 (prompt + run.c's continuation).
std::vector<int> golden_ids() {
  auto g = test::read_json(test::fixture("models/stories260k/golden_generate.json"));
  auto ids_of = [](const nlohmann::json& j) {
    return j.is_string() ? nlohmann::json::parse(j.get<std::string>()).get<std::vector<int>>() : j.get<std::vector<int>>();
  };
  auto ids = ids_of(g["prompts"][1]["prompt_ids"]);
  auto gen = ids_of(g["prompts"][1]["generated_ids"]);
  ids.insert(ids.end(), gen.begin(), gen.end());
  ids.resize(128);
  return ids;
}

// Loads a store from one synthetic file written into a temp folder.
TensorStore load_file(const test::TempDir& dir, const std::string& bytes, const std::string& name = "model.pt") {
  test::write_bytes(dir / name, bytes);
  TensorStore s;
  add_torch_file(s, dir / name);
  return s;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<float> values(const TensorView& t) {
  EXPECT_EQ(t.dtype, DType::F32);
  std::vector<float> v(size_t(t.numel()));
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

class StoriesTorch : public ::testing::TestWithParam<std::string> {};

TEST_P(StoriesTorch, SameTensorsAndExactlyTheSameLogitsAsSafetensors) {
  const std::string dir = test::fixture("torch/" + GetParam());
  const std::string ref_dir = test::fixture("models/stories260k");
  test::expect_same_tensors(TensorStore::open_folder(dir), TensorStore::open_folder(ref_dir));
  auto ids = golden_ids();
  auto got = test::load_model(dir);
  auto want = test::load_model(ref_dir);
  auto a = test::all_logits(*got.rt, ids);
  auto b = test::all_logits(*want.rt, ids);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(test::max_abs_diff(a.data(), b.data(), a.size()), 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StoriesTorch,
                         ::testing::Values("stories260k-zip", "stories260k-legacy", "stories260k-sharded"));

TEST(TorchFixtures, ShardedFolderReadsThroughItsIndex) {
  TensorStore s = TensorStore::open_folder(test::fixture("torch/stories260k-sharded"));
  ASSERT_EQ(s.files().size(), 2u);
  EXPECT_TRUE(s.files()[0].ends_with("pytorch_model-00001-of-00002.bin"));
  EXPECT_TRUE(s.files()[1].ends_with("pytorch_model-00002-of-00002.bin"));
}

TEST(TorchFixtures, ZipStoragesAreMappedNotCopied) {
  // torch aligns zip entries to 64 bytes, so every tensor must point into the file mapping: the
  // same bytes at the file offset of its entry.
  const std::string path = test::fixture("torch/stories260k-zip/pytorch_model.bin");
  TensorStore s;
  add_torch_file(s, path);
  std::string file = test::read_bytes(path);
  const TensorView& t = s.get("model.embed_tokens.weight");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u);
  EXPECT_NE(file.find(std::string(reinterpret_cast<const char*>(t.data), 256)), std::string::npos);
}

TEST(TorchFixtures, GptqPtTensorsEqualTheSafetensorsCheckpointByteForByte) {
  test::expect_same_tensors(TensorStore::open_folder(test::fixture("torch/gptq-4bit-actorder-g32-pt")),
                      TensorStore::open_folder(test::fixture("gptq/gptq-4bit-actorder-g32")));
}

TEST(TorchFixtures, GptqPtGivesExactlyTheLogitsOfTheSafetensorsCheckpoint) {
  const std::string pt = test::fixture("torch/gptq-4bit-actorder-g32-pt");
  const std::string ref = test::fixture("gptq/gptq-4bit-actorder-g32");
  auto got = test::load_model(pt);
  auto want = test::load_model(ref);
  EXPECT_EQ(got.weights->format, want.weights->format);
  EXPECT_NE(got.weights->format.find("4"), std::string::npos) << got.weights->format;
  auto g = test::read_json(ref + "/golden_logits.json");
  for (const auto& p : g["prompts"]) {
    auto ids = p["input_ids"].get<std::vector<int>>();
    auto a = test::all_logits(*got.rt, ids);
    auto b = test::all_logits(*want.rt, ids);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(test::max_abs_diff(a.data(), b.data(), a.size()), 0.0f);
  }
}

TEST(TorchFixtures, MaliciousPickleIsRefusedAndItsPayloadNeverRuns) {
  const char* marker = "/tmp/metharme-pwned";  // what the fixture's os.system call would create
  std::remove(marker);
  const std::string dir = test::fixture("torch/malicious");
  std::string msg = error_of([&] { TensorStore::open_folder(dir); });
  EXPECT_NE(msg.find("'posix.system'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nothing was executed"), std::string::npos) << msg;
  auto r = test::run_cli({"generate", "-m", dir, "-n", "4"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'posix.system'"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(marker)) << "the pickle's payload ran";
}

// Pickles that would run a shell command in Python (creating a marker file) must be refused at
// the global, whatever opcode spells it.
TEST(RestrictedUnpickler, RefusesEveryCodeExecutionRoute) {
  test::TempDir dir;
  const std::string marker = dir / "ran";
  const std::string cmd = "touch " + marker;
  struct Case {
    std::string pickle, expect;
  };
  std::vector<Case> cases;
  for (auto [mod, name] : std::vector<std::pair<std::string, std::string>>{
           {"os", "system"}, {"posix", "system"}, {"builtins", "eval"}, {"builtins", "exec"}, {"__builtin__", "eval"},
           {"subprocess", "check_call"}, {"builtins", "getattr"}, {"torch", "load"}, {"torch.serialization", "load"},
           {"numpy.core.multiarray", "_reconstruct"}, {"torch._utils", "_rebuild_device_tensor_from_numpy"}}) {
    test::Pickle p;
    p.proto().global(mod, name).str(cmd).op(0x85).reduce().stop();
    std::string shown = (mod == "__builtin__" ? std::string("builtins") : mod) + "." + name;
    cases.push_back({p.bytes(), "'" + shown + "'"});
  }
  {  // protocol 4 STACK_GLOBAL
    test::Pickle p;
    p.op(0x80).byte(4).str("os").str("system").op(0x93).str(cmd).op(0x85).reduce().stop();
    cases.push_back({p.bytes(), "'os.system'"});
  }
  {  // a forbidden global nested inside an otherwise valid state dict
    test::Pickle p;
    p.proto().op('}').str("x").global("os", "system").str(cmd).op(0x85).reduce().op('s').stop();
    cases.push_back({p.bytes(), "'os.system'"});
  }
  {  // INST, OBJ, NEWOBJ_EX and EXT1 build objects without naming a GLOBAL
    test::Pickle inst, obj, newobj_ex, ext;
    inst.proto().mark().str(cmd).op('i').raw("os\nsystem\n").stop();
    cases.push_back({inst.bytes(), "INST"});
    obj.proto().mark().global("collections", "OrderedDict").op('o').stop();
    cases.push_back({obj.bytes(), "OBJ"});
    newobj_ex.proto().global("collections", "OrderedDict").op(')').op('}').op(0x92).stop();
    cases.push_back({newobj_ex.bytes(), "NEWOBJ_EX"});
    ext.proto().op(0x82).byte(1).stop();
    cases.push_back({ext.bytes(), "EXT"});
  }
  for (const auto& c : cases) {
    std::string msg = error_of([&] { load_file(dir, test::torch_zip(c.pickle, {})); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    EXPECT_NE(msg.find("pickle byte"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(marker));
}

TEST(RestrictedUnpickler, BuildsPlainValues) {
  test::Pickle p;
  // {"a": [1, -2, 3.5, None, True], "b": ("x", b"yz"), "c": big int}, with memo round trips
  p.proto().op('}').op('q').byte(0).mark();
  p.str("a").op(']').op('q').byte(1).mark().integer(1).integer(-2);
  p.op('G').raw(std::string("\x40\x0c\x00\x00\x00\x00\x00\x00", 8)).op('N').op(0x88).op('e');
  p.str("b").str("x").op('C').byte(2).raw("yz").op(0x86);
  p.str("c").op(0x8a).byte(9).raw(std::string("\x01\x00\x00\x00\x00\x00\x00\x00\x01", 9));
  p.str("d").op('h').byte(1);  // the same list again
  p.op('u').stop();
  const std::string bytes = p.bytes();
  Unpickler up(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test");
  const PyObj* d = up.load();
  ASSERT_TRUE(d->is(PyObj::Kind::Dict));
  ASSERT_EQ(d->dict_size(), 4u);
  const PyObj* a = d->dict_find("a");
  ASSERT_TRUE(a && a->is(PyObj::Kind::List));
  ASSERT_EQ(a->items.size(), 5u);
  EXPECT_EQ(a->items[0]->i, 1);
  EXPECT_EQ(a->items[1]->i, -2);
  EXPECT_EQ(a->items[2]->f, 3.5);
  EXPECT_TRUE(a->items[3]->is(PyObj::Kind::None));
  EXPECT_TRUE(a->items[4]->is(PyObj::Kind::Bool) && a->items[4]->i == 1);
  const PyObj* b = d->dict_find("b");
  ASSERT_TRUE(b && b->is(PyObj::Kind::Tuple));
  EXPECT_EQ(b->items[0]->s, "x");
  EXPECT_TRUE(b->items[1]->is(PyObj::Kind::Bytes));
  EXPECT_EQ(b->items[1]->s, "yz");
  EXPECT_TRUE(d->dict_find("c")->is(PyObj::Kind::BigInt));
  EXPECT_EQ(d->dict_find("d"), a);
  EXPECT_EQ(up.position(), bytes.size());
}

TEST(RestrictedUnpickler, MalformedPicklesGiveClearErrors) {
  auto err = [](const std::string& bytes) {
    return error_of([&] {
      Unpickler up(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.pkl");
      up.load();
    });
  };
  test::Pickle trunc, unknown, memo, under;
  trunc.proto().op('X').raw(std::string("\xff\x00\x00\x00", 4) + "abc");
  EXPECT_NE(err(trunc.bytes()).find("truncated"), std::string::npos) << err(trunc.bytes());
  unknown.proto().op(0xfe);
  EXPECT_NE(err(unknown.bytes()).find("unknown pickle opcode 0xfe"), std::string::npos) << err(unknown.bytes());
  memo.proto().op('h').byte(7).stop();
  EXPECT_NE(err(memo.bytes()).find("memo key 7"), std::string::npos);
  under.proto().op('s').stop();
  EXPECT_NE(err(under.bytes()).find("stack underflow"), std::string::npos);
  EXPECT_NE(err("").find("truncated"), std::string::npos);
}

// --- synthetic torch.save files: layouts, views and damage ------------------------------------

std::vector<float> iota(size_t n, float start = 0.5f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + float(i);
  return v;
}

TEST(TorchZip, StridesOffsetsSharedStoragesDeflateAndZip64) {
  // Storage 0 holds 24 floats shared by three tensors: a contiguous [2,3] at offset 4, a
  // transposed [3,2] view (stride [1,3]) and a strided column; storage 1 is a fp16 vector.
  std::vector<test::FakeTensor> ts = {
      {"a", "FloatStorage", "0", 24, 4, {2, 3}, {}},
      {"t", "FloatStorage", "0", 24, 0, {3, 2}, {1, 3}},
      {"col", "FloatStorage", "0", 24, 1, {4}, {6}},
      {"h", "HalfStorage", "1", 3, 0, {3}, {}},
  };
  const std::string pkl = test::state_dict_pickle(ts);
  const std::string half = std::string("\x00\x3c\x00\x40\x00\xc2", 6);  // 1, 2, -3 in fp16
  test::TempDir dir;
  for (int variant = 0; variant < 4; ++variant) {
    test::ZipOptions o;
    o.deflate = variant == 1;
    o.zip64 = variant == 2;
    o.align = variant == 3 ? 0 : 64;  // 3: misaligned storages must still load (copied)
    TensorStore s = load_file(dir, test::torch_zip(pkl, {{"0", test::floats_bytes(iota(24))}, {"1", half}}, o));
    SCOPED_TRACE(variant);
    EXPECT_EQ(values(s.get("a")), (std::vector<float>{4.5f, 5.5f, 6.5f, 7.5f, 8.5f, 9.5f}));
    EXPECT_EQ(s.get("t").shape, (std::vector<int64_t>{3, 2}));
    EXPECT_EQ(values(s.get("t")), (std::vector<float>{0.5f, 3.5f, 1.5f, 4.5f, 2.5f, 5.5f}));
    EXPECT_EQ(values(s.get("col")), (std::vector<float>{1.5f, 7.5f, 13.5f, 19.5f}));
    EXPECT_EQ(s.get("h").dtype, DType::F16);
    EXPECT_EQ(tensor_to_f32(s.get("h")), (std::vector<float>{1.0f, 2.0f, -3.0f}));
  }
}

TEST(TorchZip, StateDictInsideAWrapperDict) {
  test::Pickle p;
  p.proto().op('}').str("epoch").integer(3).op('s').str("state_dict");
  std::string inner = test::state_dict_pickle({{"w", "FloatStorage", "0", 2, 0, {2}, {}}});
  // Splice the inner OrderedDict (without PROTO and STOP) in as the value.
  p.raw(inner.substr(2, inner.size() - 3)).op('s').stop();
  test::TempDir dir;
  TensorStore s = load_file(dir, test::torch_zip(p.bytes(), {{"0", test::floats_bytes({1, 2})}}));
  EXPECT_EQ(s.names(), std::vector<std::string>{"w"});
  EXPECT_EQ(values(s.get("w")), (std::vector<float>{1, 2}));
}

TEST(TorchZip, DamagedArchivesGiveClearErrors) {
  test::TempDir dir;
  auto err = [&](const std::string& bytes) { return error_of([&] { load_file(dir, bytes); }); };
  const std::string pkl = test::state_dict_pickle({{"w", "FloatStorage", "0", 4, 0, {4}, {}}});
  const std::string good = test::torch_zip(pkl, {{"0", test::floats_bytes(iota(4))}});
  ASSERT_EQ(err(good), "(no error)");

  // Truncated: the real fixture cut at 60%.
  std::string fixture = test::read_bytes(test::fixture("torch/stories260k-zip/pytorch_model.bin"));
  std::string m = err(fixture.substr(0, fixture.size() * 6 / 10));
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  EXPECT_NE(m.find("model.pt"), std::string::npos) << m;
  // Truncated by just the last byte of the end record, and inside the central directory.
  EXPECT_NE(err(good.substr(0, good.size() - 1)).find("truncated"), std::string::npos);

  // Storage size disagrees with the pickle: 12 bytes for 4 floats.
  m = err(test::torch_zip(pkl, {{"0", test::floats_bytes(iota(3))}}));
  EXPECT_NE(m.find("storage '0'"), std::string::npos) << m;
  EXPECT_NE(m.find("holds 12 bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("4 elements of F32 (16 bytes)"), std::string::npos) << m;

  // The pickle references a storage the archive lacks.
  const std::string two = test::state_dict_pickle(
      {{"w", "FloatStorage", "0", 4, 0, {4}, {}}, {"v", "FloatStorage", "7", 2, 0, {2}, {}}});
  m = err(test::torch_zip(two, {{"0", test::floats_bytes(iota(4))}}));
  EXPECT_NE(m.find("storage '7'"), std::string::npos) << m;
  EXPECT_NE(m.find("no entry 'archive/data/7'"), std::string::npos) << m;

  // A tensor reaching past its storage.
  m = err(test::torch_zip(test::state_dict_pickle({{"w", "FloatStorage", "0", 4, 2, {2, 2}, {}}}),
                          {{"0", test::floats_bytes(iota(4))}}));
  EXPECT_NE(m.find("tensor 'w'"), std::string::npos) << m;
  EXPECT_NE(m.find("reaches element 5"), std::string::npos) << m;

  // Corrupt deflate data is caught by zlib or the CRC.
  test::ZipOptions d;
  d.deflate = true;
  d.align = 0;  // the compressed bytes follow the entry name directly
  std::string z = test::torch_zip(pkl, {{"0", test::floats_bytes(iota(4))}}, d);
  size_t at = z.find("archive/data/0") + 14 + 4;  // inside the storage's compressed bytes
  z[at] = char(z[at] ^ 0x55);
  m = err(z);
  EXPECT_NE(m.find("entry 'archive/data/0'"), std::string::npos) << m;

  // Not a checkpoint at all, and an empty file.
  EXPECT_NE(err("hello world").find("not a PyTorch checkpoint"), std::string::npos);
  EXPECT_NE(err("").find("empty"), std::string::npos);
  // A zip without data.pkl.
  EXPECT_NE(err(test::zip_bytes({{"readme.txt", "hi"}})).find("no data.pkl"), std::string::npos);
}

TEST(TorchLegacy, ViewsAndMisalignedStoragesLoad) {
  // Storage "0" (6 floats) with a view from element 2 of 3 elements; storage "1" (2 ints).
  std::vector<test::FakeTensor> ts = {
      {"full", "FloatStorage", "0", 6, 0, {2, 3}, {}},
      {"view", "FloatStorage", "0", 6, 1, {2}, {}, true, 2, 3},
      {"ints", "IntStorage", "1", 2, 0, {2}, {}},
  };
  std::string ints = std::string("\x07\x00\x00\x00\xf9\xff\xff\xff", 8);  // 7, -7
  test::TempDir dir;
  TensorStore s = load_file(
      dir, test::torch_legacy(test::state_dict_pickle(ts, true), {{"0", 6, test::floats_bytes(iota(6))}, {"1", 2, ints}}));
  EXPECT_EQ(values(s.get("full")), iota(6));
  EXPECT_EQ(values(s.get("view")), (std::vector<float>{3.5f, 4.5f}));
  const TensorView& i = s.get("ints");
  EXPECT_EQ(i.dtype, DType::I32);
  EXPECT_EQ(i.as<int32_t>()[0], 7);
  EXPECT_EQ(i.as<int32_t>()[1], -7);
}

TEST(TorchLegacy, DamagedFilesGiveClearErrors) {
  test::TempDir dir;
  auto err = [&](const std::string& bytes) { return error_of([&] { load_file(dir, bytes); }); };
  const std::string pkl = test::state_dict_pickle({{"w", "FloatStorage", "0", 4, 0, {4}, {}}}, true);
  // Element count in the file disagrees with the pickle.
  std::string m = err(test::torch_legacy(pkl, {{"0", 3, test::floats_bytes(iota(3))}}));
  EXPECT_NE(m.find("storage '0' holds 3 elements, but the pickle declares 4"), std::string::npos) << m;
  // Truncated storage bytes.
  std::string full = test::torch_legacy(pkl, {{"0", 4, test::floats_bytes(iota(4))}});
  m = err(full.substr(0, full.size() - 5));
  EXPECT_NE(m.find("runs past the end of the file"), std::string::npos) << m;
  // Storage referenced but not stored.
  m = err(test::torch_legacy(pkl, {}));
  EXPECT_NE(m.find("which the file does not contain"), std::string::npos) << m;
  // The real legacy fixture with its first element count changed.
  std::string fx = test::read_bytes(test::fixture("torch/stories260k-legacy/pytorch_model.bin"));
  Unpickler up(reinterpret_cast<const uint8_t*>(fx.data()), fx.size(), "fx");
  for (int k = 0; k < 5; ++k) up.load();
  fx[up.position()] = char(fx[up.position()] + 1);
  m = err(fx);
  EXPECT_NE(m.find("elements, but the pickle declares"), std::string::npos) << m;
}

TEST(TorchFolder, IndexErrorsAndTrainerFilesAreSkipped) {
  test::TempDir dir;
  const std::string pkl = test::state_dict_pickle({{"w", "FloatStorage", "0", 2, 0, {2}, {}}});
  test::write_bytes(dir / "pytorch_model-00001-of-00001.bin", test::torch_zip(pkl, {{"0", test::floats_bytes({1, 2})}}));
  test::write_bytes(dir / "pytorch_model.bin.index.json",
                    R"({"weight_map": {"w": "pytorch_model-00001-of-00001.bin", "v": "pytorch_model-00001-of-00001.bin"}})");
  std::string m = error_of([&] { TensorStore::open_folder(dir.path()); });
  EXPECT_NE(m.find("tensor 'v' is assigned to this shard by the index but is not in it"), std::string::npos) << m;
  test::write_bytes(dir / "pytorch_model.bin.index.json", R"({"weight_map": {"w": "missing.bin"}})");
  m = error_of([&] { TensorStore::open_folder(dir.path()); });
  EXPECT_NE(m.find("names shard 'missing.bin'"), std::string::npos) << m;
  test::write_bytes(dir / "pytorch_model.bin.index.json", R"({"weight_map": {"w": "../x.bin"}})");
  m = error_of([&] { TensorStore::open_folder(dir.path()); });
  EXPECT_NE(m.find("must be a plain file name"), std::string::npos) << m;

  // Without an index: every .bin/.pt except trainer state (a pickle that would be refused).
  fs::remove(dir / "pytorch_model.bin.index.json");
  test::Pickle evil;
  evil.proto().global("transformers.training_args", "TrainingArguments").stop();
  test::write_bytes(dir / "training_args.bin", test::torch_zip(evil.bytes(), {}));
  TensorStore s = TensorStore::open_folder(dir.path());
  EXPECT_EQ(s.names(), std::vector<std::string>{"w"});
}


// Random damage to the pickles and to the zip structures never crashes, hangs or throws anything
// but a metharme::Error: every mutant either loads or is refused with a message.
TEST(TorchRobustness, RandomDamageGivesErrorsNotCrashes) {
  test::TempDir dir;
  const std::string zip_path = test::fixture("torch/stories260k-zip/pytorch_model.bin");
  const std::string zip = test::read_bytes(zip_path);
  const std::string legacy = test::read_bytes(test::fixture("torch/stories260k-legacy/pytorch_model.bin"));
  ZipReader z(zip_path);
  std::vector<uint8_t> buf;
  z.extract(*z.find("pytorch_model/data.pkl"), buf);
  const std::string pkl(buf.begin(), buf.end());
  std::vector<std::pair<std::string, std::string>> storages;
  for (const auto& e : z.entries()) {
    const std::string prefix = "pytorch_model/data/";
    if (e.name.rfind(prefix, 0) != 0) continue;
    z.extract(e, buf);
    storages.push_back({e.name.substr(prefix.size()), std::string(buf.begin(), buf.end())});
  }
  std::mt19937_64 rng(1234);
  int loaded = 0, refused = 0;
  for (int iter = 0; iter < 600; ++iter) {
    std::string bytes;
    const int flips = 1 + int(rng() % 4);
    if (iter % 3 == 0) {  // a damaged pickle inside a well-formed archive
      std::string p = pkl;
      for (int f = 0; f < flips; ++f) p[rng() % p.size()] = char(rng());
      bytes = test::torch_zip(p, storages);
    } else if (iter % 3 == 1) {  // the legacy file's pickles (its first 6.5 KB) damaged
      bytes = legacy;
      for (int f = 0; f < flips; ++f) bytes[rng() % 6500] = char(rng());
    } else if (rng() % 2) {  // the zip cut anywhere
      bytes = zip.substr(0, rng() % zip.size());
    } else {  // the zip's central directory and end records damaged
      bytes = zip;
      for (int f = 0; f < flips; ++f) bytes[bytes.size() - 1 - rng() % 4096] = char(rng());
    }
    try {
      load_file(dir, bytes);
      ++loaded;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 300);
  EXPECT_GT(loaded, 0);  // some damage (e.g. in a tensor name) is not detectable, and that is fine
}

}  // namespace
}  // namespace metharme
