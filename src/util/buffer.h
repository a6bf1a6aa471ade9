// Large zero-initialized buffers from anonymous mmap: pages cost memory only once touched, so a
// KV cache sized for the whole context does not inflate RSS until it is used.
#pragma once

#include <cstddef>
#include <cstdint>

namespace metharme {

class PageBuffer {
 public:
  PageBuffer() = default;
  explicit PageBuffer(size_t bytes);
  ~PageBuffer();
  PageBuffer(PageBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  PageBuffer& operator=(PageBuffer&& o) noexcept;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;

  // Asks for transparent huge pages (2 MiB) over this buffer: weights streamed every token then
  // need far fewer TLB entries, and hardware prefetchers stop at 4 KiB page boundaries.
  void advise_huge_pages();

  uint8_t* data() { return p_; }
  const uint8_t* data() const { return p_; }
  size_t size() const { return n_; }
  template <class T> T* as() { return reinterpret_cast<T*>(p_); }
  template <class T> const T* as() const { return reinterpret_cast<const T*>(p_); }

 private:
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace metharme
