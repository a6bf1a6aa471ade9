#include "util/py_random.h"

#include <bit>

#include "util/error.h"

namespace metharme {

void PyRandom::seed_int(int64_t seed) {
  uint64_t v = seed < 0 ? uint64_t(0) - uint64_t(seed) : uint64_t(seed);
  uint32_t key[2] = {uint32_t(v), uint32_t(v >> 32)};
  const int key_len = key[1] != 0 ? 2 : 1;

  // init_genrand(19650218), then init_by_array(key), as in the MT19937 reference code.
  mt_[0] = 19650218u;
  for (int i = 1; i < kN; ++i) mt_[size_t(i)] = 1812433253u * (mt_[size_t(i - 1)] ^ (mt_[size_t(i - 1)] >> 30)) + uint32_t(i);
  int i = 1, j = 0;
  for (int k = kN > key_len ? kN : key_len; k > 0; --k) {
    uint32_t prev = mt_[size_t(i - 1)];
    mt_[size_t(i)] = (mt_[size_t(i)] ^ ((prev ^ (prev >> 30)) * 1664525u)) + key[j] + uint32_t(j);
    ++i, ++j;
    if (i >= kN) mt_[0] = mt_[kN - 1], i = 1;
    if (j >= key_len) j = 0;
  }
  for (int k = kN - 1; k > 0; --k) {
    uint32_t prev = mt_[size_t(i - 1)];
    mt_[size_t(i)] = (mt_[size_t(i)] ^ ((prev ^ (prev >> 30)) * 1566083941u)) - uint32_t(i);
    ++i;
    if (i >= kN) mt_[0] = mt_[kN - 1], i = 1;
  }
  mt_[0] = 0x80000000u;
  index_ = kN;
}

uint32_t PyRandom::next_u32() {
  if (index_ >= kN) {
    constexpr uint32_t kUpper = 0x80000000u, kLower = 0x7fffffffu, kMatrix = 0x9908b0dfu;
    for (int k = 0; k < kN; ++k) {
      uint32_t y = (mt_[size_t(k)] & kUpper) | (mt_[size_t((k + 1) % kN)] & kLower);
      mt_[size_t(k)] = mt_[size_t((k + 397) % kN)] ^ (y >> 1) ^ ((y & 1u) ? kMatrix : 0u);
    }
    index_ = 0;
  }
  uint32_t y = mt_[size_t(index_++)];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t PyRandom::getrandbits(int k) {
  MH_CHECK(k >= 0 && k <= 64, "getrandbits: ", k, " bits is outside 0..64");
  if (k == 0) return 0;
  if (k <= 32) return next_u32() >> (32 - k);
  // Wider draws fill 32-bit words from the least significant end; the last word keeps its top bits.
  uint64_t lo = next_u32();
  uint64_t hi = next_u32() >> (64 - k);
  return lo | (hi << 32);
}

uint64_t PyRandom::randbelow(uint64_t n) {
  MH_CHECK(n >= 1, "randbelow: empty range");
  const int k = std::bit_width(n);
  uint64_t r = getrandbits(k);
  while (r >= n) r = getrandbits(k);
  return r;
}

int64_t PyRandom::randint(int64_t a, int64_t b) {
  MH_CHECK(a <= b, "randint: empty range [", a, ", ", b, "]");
  return a + int64_t(randbelow(uint64_t(b - a) + 1));
}

}  // namespace metharme
