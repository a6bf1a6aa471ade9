// Dequantization of every ggml block type against blocks built here element by element: each
// test packs known codes, scales and mins into the documented byte layout (ggml-common.h), then
// checks ggml_dequantize returns d*scale*code (- min) for every element.
#include "formats/ggml_quants.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "util/error.h"
#include "util/half.h"

namespace metharme {
namespace {

using Bytes = std::vector<uint8_t>;

void put_h(Bytes& b, size_t at, float v) {
  uint16_t h = f32_to_fp16(v);
  std::memcpy(&b[at], &h, 2);
}
float rt_h(float v) { return fp16_to_f32(f32_to_fp16(v)); }  // what an fp16 field holds

void expect_close(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << "element " << i;
}

std::vector<float> deq(GgmlType t, const Bytes& b, int n) {
  std::vector<float> y(static_cast<size_t>(n));
  ggml_dequantize(t, b.data(), n, y.data());
  return y;
}

class Quants : public ::testing::Test {
 protected:
  std::mt19937 rng{1234};
  int rnd(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
  float rndf(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); }
};

// Q4_0 / Q4_1 / Q5_0 / Q5_1: value j in the low nibble of byte j, j+16 in the high nibble;
// Q5 fifth bits: bit e of the u32 high word.
TEST_F(Quants, SmallBlocks) {
  for (int rep = 0; rep < 20; ++rep) {
    int c[32];
    const float d = rt_h(rndf(-0.2f, 0.2f)), m = rt_h(rndf(-1.0f, 1.0f));
    for (int& x : c) x = rnd(0, 31);
    Bytes q4(18), q41(20), q5(22), q51(24);
    put_h(q4, 0, d);
    put_h(q41, 0, d), put_h(q41, 2, m);
    put_h(q5, 0, d);
    put_h(q51, 0, d), put_h(q51, 2, m);
    uint32_t qh = 0;
    for (int e = 0; e < 32; ++e) {
      const int nib = c[e] & 15, byte = e % 16, shift = e < 16 ? 0 : 4;
      q4[size_t(2 + byte)] |= uint8_t(nib << shift);
      q41[size_t(4 + byte)] |= uint8_t(nib << shift);
      q5[size_t(6 + byte)] |= uint8_t(nib << shift);
      q51[size_t(8 + byte)] |= uint8_t(nib << shift);
      qh |= uint32_t(c[e] >> 4) << e;
    }
    std::memcpy(&q5[2], &qh, 4);
    std::memcpy(&q51[4], &qh, 4);
    std::vector<double> w4, w41, w5, w51;
    for (int e = 0; e < 32; ++e) {
      w4.push_back(double(d) * ((c[e] & 15) - 8));
      w41.push_back(double(d) * (c[e] & 15) + m);
      w5.push_back(double(d) * (c[e] - 16));
      w51.push_back(double(d) * c[e] + m);
    }
    expect_close(deq(GgmlType::kQ4_0, q4, 32), w4);
    expect_close(deq(GgmlType::kQ4_1, q41, 32), w41);
    expect_close(deq(GgmlType::kQ5_0, q5, 32), w5);
    expect_close(deq(GgmlType::kQ5_1, q51, 32), w51);
  }
}

TEST_F(Quants, Q8_0TwoBlocks) {
  Bytes b(68);
  std::vector<double> want;
  for (int blk = 0; blk < 2; ++blk) {
    const float d = rt_h(rndf(0.001f, 0.05f));
    put_h(b, size_t(34 * blk), d);
    for (int e = 0; e < 32; ++e) {
      const int q = rnd(-128, 127);
      b[size_t(34 * blk + 2 + e)] = uint8_t(int8_t(q));
      want.push_back(double(d) * q);
    }
  }
  expect_close(deq(GgmlType::kQ8_0, b, 64), want);
}

// Q2_K: element e = 128n + 32j + 16p + l sits in code byte 32n + 16p + l at bits 2j; its
// sub-block is e / 16 with scale byte (scale | min << 4).
TEST_F(Quants, Q2_K) {
  Bytes b(84);
  int sc[16], mn[16], c[256];
  for (int s = 0; s < 16; ++s) sc[s] = rnd(0, 15), mn[s] = rnd(0, 15), b[size_t(s)] = uint8_t(sc[s] | mn[s] << 4);
  const float d = rt_h(0.0123f), dmin = rt_h(0.0071f);
  put_h(b, 80, d);
  put_h(b, 82, dmin);
  std::vector<double> want;
  for (int e = 0; e < 256; ++e) {
    c[e] = rnd(0, 3);
    const int n = e / 128, j = e % 128 / 32, p = e % 32 / 16, l = e % 16;
    b[size_t(16 + 32 * n + 16 * p + l)] |= uint8_t(c[e] << (2 * j));
    want.push_back(double(d) * sc[e / 16] * c[e] - double(dmin) * mn[e / 16]);
  }
  expect_close(deq(GgmlType::kQ2_K, b, 256), want);
}

// ggml's own unpacking of Q3_K's 12 scale bytes (three 32-bit words, masks 0x03.. and 0x0f..),
// as a second opinion on the packing below.
void q3k_scales_ggml_style(const uint8_t* s, int8_t out[16]) {
  uint32_t aux[4];
  std::memcpy(aux, s, 12);
  const uint32_t tmp = aux[2], k1 = 0x03030303, k2 = 0x0f0f0f0f;
  aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
  aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
  aux[0] = (aux[0] & k2) | (((tmp >> 0) & k1) << 4);
  aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
  std::memcpy(out, aux, 16);
}

// Q3_K: value v in [-4, 3] is two low bits (code byte 32 + 32n + 16p + l, bits 2j) plus a high
// bit (mask byte 16p + l, bit 4n + j) that, when clear, subtracts 4; scales are 6-bit, minus 32.
TEST_F(Quants, Q3_K) {
  Bytes b(110);
  int sc[16];
  for (int s = 0; s < 16; ++s) {
    sc[s] = rnd(0, 63);
    if (s < 8)
      b[size_t(96 + s)] |= uint8_t(sc[s] & 15);
    else
      b[size_t(96 + s - 8)] |= uint8_t((sc[s] & 15) << 4);
    b[size_t(96 + 8 + (s & 3))] |= uint8_t((sc[s] >> 4) << (2 * (s >> 2)));
  }
  int8_t check[16];
  q3k_scales_ggml_style(&b[96], check);
  for (int s = 0; s < 16; ++s) ASSERT_EQ(check[s], sc[s]) << "scale " << s;
  const float d = rt_h(0.0311f);
  put_h(b, 108, d);
  std::vector<double> want;
  for (int e = 0; e < 256; ++e) {
    const int v = rnd(-4, 3), high = v >= 0, low = high ? v : v + 4;
    const int n = e / 128, j = e % 128 / 32, p = e % 32 / 16, l = e % 16;
    b[size_t(32 + 32 * n + 16 * p + l)] |= uint8_t(low << (2 * j));
    if (high) b[size_t(16 * p + l)] |= uint8_t(1 << (4 * n + j));
    want.push_back(double(d) * (sc[e / 16] - 32) * v);
  }
  expect_close(deq(GgmlType::kQ3_K, b, 256), want);
}

// Q4_K / Q5_K scales: sub-blocks 0-3 keep 6 bits in bytes 0-3 (scale) and 4-7 (min); 4-7 keep
// their low nibbles in bytes 8-11 and their top two bits in the top bits of bytes 0-7.
void pack_k4_scales(uint8_t* q, const int* sc, const int* mn) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] |= uint8_t(sc[j]);
      q[j + 4] |= uint8_t(mn[j]);
    } else {
      q[j + 4] = uint8_t((sc[j] & 15) | (mn[j] & 15) << 4);
      q[j - 4] |= uint8_t((sc[j] >> 4) << 6);
      q[j] |= uint8_t((mn[j] >> 4) << 6);
    }
  }
}

// Q4_K: element e = 64j + 32h + l is nibble h of byte 16 + 32j + l, sub-block e / 32.
// Q5_K: the same nibbles at 48 + ..., fifth bit in byte 16 + l at bit 2j + h.
TEST_F(Quants, Q4_KAndQ5_K) {
  for (int rep = 0; rep < 10; ++rep) {
    Bytes q4(144), q5(176);
    int sc[8], mn[8];
    for (int j = 0; j < 8; ++j) sc[j] = rnd(0, 63), mn[j] = rnd(0, 63);
    pack_k4_scales(&q4[4], sc, mn);
    pack_k4_scales(&q5[4], sc, mn);
    for (int j = 0; j < 8; ++j) {
      uint8_t s, m;
      ggml_k4_scale_min(j, &q4[4], &s, &m);
      ASSERT_EQ(s, sc[j]);
      ASSERT_EQ(m, mn[j]);
    }
    const float d = rt_h(rndf(0.001f, 0.01f)), dmin = rt_h(rndf(0.001f, 0.01f));
    put_h(q4, 0, d), put_h(q4, 2, dmin), put_h(q5, 0, d), put_h(q5, 2, dmin);
    std::vector<double> w4, w5;
    for (int e = 0; e < 256; ++e) {
      const int c = rnd(0, 31), j = e / 64, h = e % 64 / 32, l = e % 32, sb = e / 32;
      q4[size_t(16 + 32 * j + l)] |= uint8_t((c & 15) << (4 * h));
      q5[size_t(48 + 32 * j + l)] |= uint8_t((c & 15) << (4 * h));
      q5[size_t(16 + l)] |= uint8_t((c >> 4) << (2 * j + h));
      w4.push_back(double(d) * sc[sb] * (c & 15) - double(dmin) * mn[sb]);
      w5.push_back(double(d) * sc[sb] * c - double(dmin) * mn[sb]);
    }
    expect_close(deq(GgmlType::kQ4_K, q4, 256), w4);
    expect_close(deq(GgmlType::kQ5_K, q5, 256), w5);
  }
}

// Q6_K: element e = 128n + 32q + l: nibble q >> 1 of ql byte 64n + 32(q & 1) + l; two high bits
// in qh byte 32n + l at bits 2q;
// scale index 8n + 2q + l / 16; value = code - 32.
TEST_F(Quants, Q6_K) {
  Bytes b(210);
  int sc[16];
  for (int s = 0; s < 16; ++s) sc[s] = rnd(-128, 127), b[size_t(192 + s)] = uint8_t(int8_t(sc[s]));
  const float d = rt_h(0.0021f);
  put_h(b, 208, d);
  std::vector<double> want;
  for (int e = 0; e < 256; ++e) {
    const int c = rnd(0, 63), n = e / 128, q = e % 128 / 32, l = e % 32;
    b[size_t(64 * n + 32 * (q & 1) + l)] |= uint8_t((c & 15) << (4 * (q >> 1)));
    b[size_t(128 + 32 * n + l)] |= uint8_t((c >> 4) << (2 * q));
    want.push_back(double(d) * sc[8 * n + 2 * q + l / 16] * (c - 32));
  }
  expect_close(deq(GgmlType::kQ6_K, b, 256), want);
}

TEST_F(Quants, FloatTypesAndErrors) {
  Bytes f16(4), bf16(4);
  put_h(f16, 0, 1.5f), put_h(f16, 2, -0.25f);
  const uint16_t b0 = f32_to_bf16(3.0f), b1 = f32_to_bf16(-7.5f);
  std::memcpy(&bf16[0], &b0, 2), std::memcpy(&bf16[2], &b1, 2);
  expect_close(deq(GgmlType::kF16, f16, 2), {1.5, -0.25});
  expect_close(deq(GgmlType::kBF16, bf16, 2), {3.0, -7.5});
  std::vector<float> y(16);
  EXPECT_THROW(ggml_dequantize(GgmlType::kQ4_0, f16.data(), 16, y.data()), Error);
}

TEST(GgmlTypes, NamesAndSizes) {
  EXPECT_EQ(ggml_type_name(12), "Q4_K");
  EXPECT_EQ(ggml_type_name(16), "IQ2_XXS");
  EXPECT_EQ(ggml_type_name(30), "BF16");
  EXPECT_EQ(ggml_type_name(4), "type 4");
  EXPECT_FALSE(ggml_type_supported(15));  // Q8_K
  EXPECT_FALSE(ggml_type_supported(23));  // IQ4_XS
  EXPECT_TRUE(ggml_type_supported(13));
  EXPECT_EQ(ggml_block_bytes(GgmlType::kQ2_K), 84u);
  EXPECT_EQ(ggml_block_bytes(GgmlType::kQ3_K), 110u);
  EXPECT_EQ(ggml_block_bytes(GgmlType::kQ4_K), 144u);
  EXPECT_EQ(ggml_block_bytes(GgmlType::kQ5_K), 176u);
  EXPECT_EQ(ggml_block_bytes(GgmlType::kQ6_K), 210u);
}

}  // namespace
}  // namespace metharme
