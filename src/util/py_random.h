// CPython's `random` module (Mersenne Twister MT19937 seeded by init_by_array), far enough to draw
// the same integers as `random.seed(n); random.randint(a, b)`. GPTQ-for-LLaMa picks its c4
// evaluation windows and calibration samples this way, so matching them needs the same stream.
#pragma once

#include <array>
#include <cstdint>

namespace metharme {

class PyRandom {
 public:
  explicit PyRandom(int64_t seed = 0) { seed_int(seed); }

  // random.seed(n) for an int n: the key is |n| as little-endian 32-bit words ([0] for 0).
  void seed_int(int64_t seed);
  uint32_t next_u32();             // genrand_uint32
  uint64_t getrandbits(int k);     // 0 <= k <= 64
  uint64_t randbelow(uint64_t n);  // uniform in [0, n), n >= 1: rejection on bit_length(n) bits
  int64_t randint(int64_t a, int64_t b);  // uniform in [a, b], a <= b

 private:
  static constexpr int kN = 624;
  std::array<uint32_t, kN> mt_{};
  int index_ = kN;
};

}  // namespace metharme
