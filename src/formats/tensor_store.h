// All tensors of one model folder, whatever files hold them: a single or sharded safetensors
// checkpoint (through model.safetensors.index.json), or PyTorch files (formats/torch_*.h).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace metharme {

class TensorStore {
 public:
  // Opens the weight files of `dir`. Errors name the folder and what is missing.
  static TensorStore open_folder(const std::string& dir);

  const TensorView* find(const std::string& name) const;
  const TensorView& get(const std::string& name) const;  // Error naming a missing tensor
  std::vector<std::string> names() const;
  size_t size() const { return tensors_.size(); }
  const std::vector<std::string>& files() const { return files_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // For readers: register a tensor (views must stay valid while `keepalive` lives).
  void add(TensorView t);
  void keep(std::shared_ptr<void> keepalive) { keepalive_.push_back(std::move(keepalive)); }
  void add_file(const std::string& path) { files_.push_back(path); }
  void add_metadata(const std::map<std::string, std::string>& m) { metadata_.insert(m.begin(), m.end()); }

 private:
  std::map<std::string, TensorView> tensors_;
  std::vector<std::shared_ptr<void>> keepalive_;
  std::vector<std::string> files_;
  std::map<std::string, std::string> metadata_;
};

// Loads one safetensors file into `store`.
void add_safetensors_file(TensorStore& store, const std::string& path);

}  // namespace metharme
