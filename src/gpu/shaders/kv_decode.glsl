// Reading one cached K or V element (included by the attention shaders; needs p.hd).
// NAME(row, e): element e of the cached row that starts at byte `row` of buffer BUF, whose type T
// is 0 f32, 1 f16, 2 q8, 3 q4 (kernels/kv.h row layouts).
#define KV_DECODE(NAME, BUF, T)                                                                   \
  uint NAME##_byte(uint a) { return (BUF[a >> 2] >> (8u * (a & 3u))) & 0xFFu; }                  \
  float NAME(uint row, int e) {                                                                   \
    if (T == 0) return uintBitsToFloat(BUF[(row >> 2) + uint(e)]);                                \
    if (T == 1) {                                                                                 \
      const uint a = (row >> 1) + uint(e);                                                        \
      return unpackHalf2x16(BUF[a >> 1] >> (16u * (a & 1u))).x;                                  \
    }                                                                                             \
    const int b = e / 32, i = e % 32, len = min(32, p.hd - 32 * b);                               \
    const uint blk = row + uint(b * (T == 2 ? 34 : 18));                                          \
    const float d = unpackHalf2x16(NAME##_byte(blk) | (NAME##_byte(blk + 1u) << 8)).x;           \
    if (T == 2) {                                                                                 \
      const int q = int(NAME##_byte(blk + 2u + uint(i)));                                         \
      return d * float(q >= 128 ? q - 256 : q);                                                   \
    }                                                                                             \
    const int hl = (len + 1) / 2;                                                                 \
    const uint by = NAME##_byte(blk + 2u + uint(i < hl ? i : i - hl));                            \
    return d * float(int(i < hl ? by & 15u : by >> 4) - 8);                                       \
  }
