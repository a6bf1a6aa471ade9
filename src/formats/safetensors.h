// safetensors: 8-byte little-endian header length N, N bytes of JSON, then raw tensor bytes.
// The reader maps the file and hands out zero-copy views; the header is fully validated.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/tensor.h"
#include "util/fs.h"
#include "util/mapped_file.h"

namespace metharme {

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // throws Error naming file and tensor

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorView* find(const std::string& name) const;

 private:
  MappedFile file_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::vector<uint64_t>> aligned_copies_;  // tensors that were misaligned in the file
};

// Streaming writer: declare every tensor first (header is written before the data), then write
// their bytes in declaration order, in any number of pieces. Output goes through AtomicFile.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(const std::string& path);
  void declare(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Appends bytes of the current tensor; the header is emitted on the first call.
  void write(const void* data, size_t n);
  void write_tensor(const std::string& name, const void* data);  // whole tensor, must be next
  void commit();  // checks every declared byte was written
  size_t data_bytes() const { return total_; }

 private:
  struct Decl {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    size_t begin, end;
  };
  void emit_header();
  AtomicFile out_;
  std::vector<Decl> decls_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, size_t> index_;  // name -> position in decls_
  size_t total_ = 0, written_ = 0;
  bool header_done_ = false;
};

}  // namespace metharme
