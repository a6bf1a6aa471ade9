// CPython's `random` module generator (MT19937 with init_by_array seeding), so that calibration
// windows drawn with `random.seed(s); random.randint(a, b)` match GPTQ-for-LLaMa's exactly.
#pragma once

#include <array>
#include <cstdint>

namespace metharme::quant {

class PyRandom {
 public:
  explicit PyRandom(uint64_t seed) { seed_int(seed); }

  // random.seed(n) for a non-negative int n.
  void seed_int(uint64_t n);
  uint32_t next_u32();                // genrand_uint32
  uint64_t getrandbits(int k);        // 0 < k <= 64
  uint64_t randbelow(uint64_t n);     // n > 0: uniform in [0, n), CPython's rejection method
  int64_t randint(int64_t a, int64_t b);  // a <= b: uniform in [a, b]

 private:
  static constexpr int kN = 624;
  void init_genrand(uint32_t s);
  void init_by_array(const uint32_t* key, int len);
  std::array<uint32_t, kN> mt_{};
  int mti_ = kN + 1;
};

}  // namespace metharme::quant
