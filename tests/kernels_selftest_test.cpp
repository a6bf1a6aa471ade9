// The kernels' known-answer self-test (kernels/selftest.h): every family passes at every ISA
// this CPU has, a simulated mismatch fails it, and through the CLI a mismatch warns once, names
// the ISA and falls back with the same output; METHARME_ISA caps the ISA.
#include <gtest/gtest.h>

#include <cstdlib>

#include "kernels/selftest.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using kernels::Isa;

// Sets an environment variable for the scope (child processes inherit it).
struct EnvVar {
  std::string name;
  EnvVar(const char* n, const char* v) : name(n) { setenv(n, v, 1); }
  ~EnvVar() { unsetenv(name.c_str()); }
};

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

TEST(KernelSelfTest, EveryFamilyPassesAtEveryIsaOfThisCpu) {
  if (!kernels::isa_supported(Isa::kAvx2)) GTEST_SKIP() << "this CPU has no optimized kernels to test";
  ASSERT_GE(kernels::kernel_families().size(), 2u);
  for (kernels::KernelFamily* f : kernels::kernel_families()) {
    for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
      if (!kernels::isa_supported(isa)) continue;
      SCOPED_TRACE(std::string(f->name) + " " + kernels::isa_name(isa));
      const auto r = kernels::run_self_test(*f, isa, false);
      EXPECT_TRUE(r.pass);
      EXPECT_GE(r.checks.size(), 10u);
      for (const auto& c : r.checks) {
        EXPECT_TRUE(c.pass) << c.kernel << " max error " << c.max_err;
        EXPECT_LE(c.max_err, 1e-3) << c.kernel;
      }
      EXPECT_GT(r.micros, 0.0);
      EXPECT_LT(r.micros, 200000.0);  // microseconds in practice; generous for a loaded machine
    }
  }
}

TEST(KernelSelfTest, SimulatedMismatchFailsEveryFamily) {
  if (!kernels::isa_supported(Isa::kAvx2)) GTEST_SKIP() << "this CPU has no optimized kernels to test";
  for (kernels::KernelFamily* f : kernels::kernel_families()) {
    const auto r = kernels::run_self_test(*f, Isa::kAvx2, true);
    EXPECT_FALSE(r.pass) << f->name;
    int failed = 0;
    for (const auto& c : r.checks) failed += c.pass ? 0 : 1;
    EXPECT_EQ(failed, int(r.checks.size())) << f->name << ": every check sees its perturbed output";
  }
}

TEST(KernelSelfTest, SimulationVariableNamesFamiliesAndIsas) {
  auto& q4 = kernels::q4_family();
  auto& dense = kernels::dense_family();
  {
    EnvVar e("METHARME_SELFTEST_SIMULATE_MISMATCH", "int4:avx2");
    EXPECT_TRUE(kernels::simulated_mismatch(q4, Isa::kAvx2));
    EXPECT_FALSE(kernels::simulated_mismatch(q4, Isa::kAvx512));
    EXPECT_FALSE(kernels::simulated_mismatch(dense, Isa::kAvx2));
  }
  {
    EnvVar e("METHARME_SELFTEST_SIMULATE_MISMATCH", "avx512-vnni,dense:avx2");
    EXPECT_TRUE(kernels::simulated_mismatch(q4, Isa::kAvx512));
    EXPECT_TRUE(kernels::simulated_mismatch(dense, Isa::kAvx512));
    EXPECT_TRUE(kernels::simulated_mismatch(dense, Isa::kAvx2));
    EXPECT_FALSE(kernels::simulated_mismatch(q4, Isa::kAvx2));
  }
  EXPECT_FALSE(kernels::simulated_mismatch(q4, Isa::kAvx2));
}

TEST(KernelSelfTest, InfoSelfTestPrintsEveryFamilyAndIsa) {
  auto r = test::run_cli({"info", "--self-test"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string top = kernels::isa_name(kernels::detect_isa());
  EXPECT_TRUE(contains(r.out, "cpu: " + top)) << r.out;
  for (const char* fam : {"int4", "dense", "int8w", "kv"}) {
    if (kernels::isa_supported(Isa::kAvx2)) {
      EXPECT_TRUE(contains(r.out, std::string(fam) + " ")) << r.out;
    }
    EXPECT_TRUE(contains(r.out, std::string(fam) + ": using " + top + "\n")) << r.out;
  }
  EXPECT_FALSE(contains(r.out, "FAIL")) << r.out;
  if (kernels::isa_supported(Isa::kAvx2)) {
    EXPECT_TRUE(contains(r.out, "avx2         pass")) << r.out;
  }
  if (kernels::isa_supported(Isa::kAvx512)) {
    EXPECT_TRUE(contains(r.out, "avx512-vnni  pass")) << r.out;
  }
}

TEST(KernelSelfTest, InfoSelfTestReportsASimulatedMismatch) {
  const Isa top = kernels::detect_isa();
  if (top == Isa::kScalar) GTEST_SKIP() << "this CPU has no optimized kernels to test";
  const std::string name = kernels::isa_name(top), lower = kernels::isa_name(Isa(int(top) - 1));
  EnvVar e("METHARME_SELFTEST_SIMULATE_MISMATCH", ("int4:" + name).c_str());
  auto r = test::run_cli({"info", "--self-test"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "FAIL")) << r.out;
  EXPECT_TRUE(contains(r.out, "int4: using " + lower + "\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "dense: using " + name + "\n")) << r.out;
  EXPECT_TRUE(contains(r.err, "warning: the int4 " + name + " kernels failed their self-test")) << r.err;
}

// The AMX int4 product: its own line in info --self-test, and a simulated mismatch turns it off
// (the other families untouched).
TEST(KernelSelfTest, InfoSelfTestCoversTheAmxProduct) {
  if (!kernels::amx_enabled()) GTEST_SKIP() << "AMX is not in use on this CPU";
  {
    auto r = test::run_cli({"info", "--self-test"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "int4-amx amx          pass")) << r.out;
    EXPECT_TRUE(contains(r.out, "int4-amx: using amx for products of")) << r.out;
  }
  {
    EnvVar e("METHARME_SELFTEST_SIMULATE_MISMATCH", "int4-amx:amx");
    auto r = test::run_cli({"info", "--self-test"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "int4-amx amx          FAIL")) << r.out;
    EXPECT_TRUE(contains(r.out, "int4-amx: not used (self-test failed)")) << r.out;
    EXPECT_TRUE(contains(r.out, "int4: using avx512-vnni\n")) << r.out;
    EXPECT_TRUE(contains(r.err, "warning: the int4 AMX kernel failed its self-test")) << r.err;
  }
  {
    EnvVar e("METHARME_ISA", "avx512");
    auto r = test::run_cli({"info", "--self-test"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "int4-amx: not used (METHARME_ISA=avx512)")) << r.out;
  }
}

// A mismatch at run time: one warning naming the ISA, and the same greedy text from the lower
// kernels. stories260k runs the dense kernels, the GPTQ fixture the int4 ones.
TEST(KernelSelfTest, GenerateFallsBackWithOneWarning) {
  const Isa top = kernels::detect_isa();
  if (top == Isa::kScalar) GTEST_SKIP() << "this CPU has no optimized kernels to test";
  const std::string name = kernels::isa_name(top);
  for (const std::string& dir : {test::repo("models/stories260k"), test::fixture("gptq/gptq-4bit")}) {
    const std::vector<std::string> args = {"generate", "-m", dir,  "-p", "Once upon a time", "-n", "24",
                                           "--temp",   "0",  "-t", "2"};
    auto want = test::run_cli(args);
    ASSERT_EQ(want.exit_code, 0) << want.err;
    EXPECT_FALSE(contains(want.err, "self-test")) << want.err;
    EnvVar e("METHARME_SELFTEST_SIMULATE_MISMATCH", name.c_str());
    auto got = test::run_cli(args);
    ASSERT_EQ(got.exit_code, 0) << got.err;
    EXPECT_EQ(got.out, want.out) << dir;
    const size_t at = got.err.find("kernels failed their self-test");
    ASSERT_NE(at, std::string::npos) << got.err;
    EXPECT_TRUE(contains(got.err, " " + name + " kernels failed")) << got.err;
    // One warning per family whose kernels ran, none repeated.
    const std::string fam = dir.find("gptq") != std::string::npos ? "int4" : "dense";
    const std::string line = "warning: the " + fam + " " + name + " kernels failed";
    ASSERT_TRUE(contains(got.err, line)) << got.err;
    EXPECT_EQ(got.err.find(line), got.err.rfind(line)) << got.err;
  }
}

// METHARME_ISA caps the ISA: every cap gives the same greedy text; a bad value warns.
TEST(KernelSelfTest, IsaVariableCapsTheKernels) {
  const std::vector<std::string> args = {
      "generate", "-m", test::fixture("gptq/gptq-4bit"), "-p", "Once upon a time", "-n", "24", "--temp", "0",
      "-t",       "2"};
  auto want = test::run_cli(args);
  ASSERT_EQ(want.exit_code, 0) << want.err;
  for (const char* cap : {"scalar", "avx2", "avx512"}) {
    EnvVar e("METHARME_ISA", cap);
    auto got = test::run_cli(args);
    ASSERT_EQ(got.exit_code, 0) << got.err;
    EXPECT_EQ(got.out, want.out) << cap;
    auto info = test::run_cli({"info", "--self-test"});
    Isa want_isa = Isa::kScalar;
    ASSERT_TRUE(kernels::parse_isa(cap, &want_isa));
    if (int(want_isa) > int(kernels::detect_isa())) want_isa = kernels::detect_isa();
    EXPECT_TRUE(contains(info.out, std::string("in use: ") + kernels::isa_name(want_isa))) << info.out;
  }
  EnvVar e("METHARME_ISA", "avx9000");
  auto bad = test::run_cli(args);
  EXPECT_EQ(bad.exit_code, 0);
  EXPECT_TRUE(contains(bad.err, "METHARME_ISA='avx9000' is not one of scalar, avx2, avx512")) << bad.err;
}

}  // namespace
}  // namespace metharme
