// Scalar exp without libm's slow paths at the range ends.
#pragma once

#include <cmath>

namespace metharme {

// expf's overflow and underflow cases take a slow path in libm; their results are known: exp(x)
// is +inf in fp32 for x > 89 and 0 for x < -104.
inline float exp_fast_edges(float x) { return x > 89.0f ? INFINITY : x < -104.0f ? 0.0f : std::exp(x); }

}  // namespace metharme
