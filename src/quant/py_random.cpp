#include "quant/py_random.h"

#include <bit>

#include "util/error.h"

namespace metharme::quant {

void PyRandom::init_genrand(uint32_t s) {
  mt_[0] = s;
  for (int i = 1; i < kN; ++i) mt_[size_t(i)] = 1812433253u * (mt_[size_t(i - 1)] ^ (mt_[size_t(i - 1)] >> 30)) + uint32_t(i);
  mti_ = kN;
}

void PyRandom::init_by_array(const uint32_t* key, int len) {
  init_genrand(19650218u);
  int i = 1, j = 0;
  for (int k = kN > len ? kN : len; k; --k) {
    mt_[size_t(i)] = (mt_[size_t(i)] ^ ((mt_[size_t(i - 1)] ^ (mt_[size_t(i - 1)] >> 30)) * 1664525u)) + key[j] + uint32_t(j);
    ++i;
    ++j;
    if (i >= kN) {
      mt_[0] = mt_[kN - 1];
      i = 1;
    }
    if (j >= len) j = 0;
  }
  for (int k = kN - 1; k; --k) {
    mt_[size_t(i)] = (mt_[size_t(i)] ^ ((mt_[size_t(i - 1)] ^ (mt_[size_t(i - 1)] >> 30)) * 1566083941u)) - uint32_t(i);
    ++i;
    if (i >= kN) {
      mt_[0] = mt_[kN - 1];
      i = 1;
    }
  }
  mt_[0] = 0x80000000u;
}

void PyRandom::seed_int(uint64_t n) {
  // CPython splits |n| into 32-bit words, least significant first; zero becomes the key [0].
  uint32_t key[2] = {uint32_t(n), uint32_t(n >> 32)};
  init_by_array(key, (n >> 32) ? 2 : 1);
}

uint32_t PyRandom::next_u32() {
  constexpr uint32_t kMatrixA = 0x9908b0dfu, kUpper = 0x80000000u, kLower = 0x7fffffffu;
  if (mti_ >= kN) {
    int kk = 0;
    for (; kk < kN - 397; ++kk) {
      uint32_t y = (mt_[size_t(kk)] & kUpper) | (mt_[size_t(kk + 1)] & kLower);
      mt_[size_t(kk)] = mt_[size_t(kk + 397)] ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
    }
    for (; kk < kN - 1; ++kk) {
      uint32_t y = (mt_[size_t(kk)] & kUpper) | (mt_[size_t(kk + 1)] & kLower);
      mt_[size_t(kk)] = mt_[size_t(kk + 397 - kN)] ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
    }
    uint32_t y = (mt_[kN - 1] & kUpper) | (mt_[0] & kLower);
    mt_[kN - 1] = mt_[396] ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
    mti_ = 0;
  }
  uint32_t y = mt_[size_t(mti_++)];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t PyRandom::getrandbits(int k) {
  MH_CHECK(k > 0 && k <= 64, "getrandbits: k = ", k, " out of range");
  if (k <= 32) return next_u32() >> (32 - k);
  // Words are filled least significant first; the last one keeps its top bits.
  uint64_t lo = next_u32();
  uint64_t hi = next_u32() >> (64 - k);
  return lo | (hi << 32);
}

uint64_t PyRandom::randbelow(uint64_t n) {
  MH_CHECK(n > 0, "randbelow(0)");
  int k = std::bit_width(n);
  uint64_t r = getrandbits(k);
  while (r >= n) r = getrandbits(k);
  return r;
}

int64_t PyRandom::randint(int64_t a, int64_t b) {
  MH_CHECK(a <= b, "randint: empty range [", a, ", ", b, "]");
  return a + int64_t(randbelow(uint64_t(b - a) + 1));
}

}  // namespace metharme::quant
