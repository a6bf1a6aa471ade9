#include "quant/output.h"

#include <filesystem>
#include <map>
#include <memory>

#include "formats/safetensors.h"
#include "util/error.h"
#include "util/fs.h"

namespace metharme::quant {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Which linear names form each sub-list of a block, as transformers' GPTQConfig lists them.
json modules_in_block(const OutputSpec& s) {
  const std::vector<std::vector<int>> lists = {{kK, kV, kQ}, {kO}, {kUp, kGate}, {kDown}};
  json out = json::array();
  for (const auto& l : lists) {
    json names = json::array();
    for (int i : l)
      if (s.quantized[size_t(i)]) names.push_back(linear_name(i));
    if (!names.empty()) out.push_back(names);
  }
  return out;
}

}  // namespace

json quantization_config_json(const OutputSpec& s, bool for_config_json) {
  json q = {
      {"quant_method", "gptq"},
      {"bits", s.qc.bits},
      {"group_size", s.qc.group_size > 0 ? s.qc.group_size : -1},
      {"damp_percent", s.qc.percdamp},
      {"desc_act", s.qc.act_order},
      {"static_groups", s.qc.static_groups},
      {"sym", s.qc.sym},
      {"true_sequential", s.true_sequential},
      {"checkpoint_format", s.format == PackFormat::kGptqV2 ? "gptq_v2" : "gptq"},
      {"model_file_base_name", "model"},
      {"model_name_or_path", nullptr},
  };
  bool all = true;
  for (bool b : s.quantized) all = all && b;
  if (!all && for_config_json) {
    // transformers converts only the listed linears; the others load as plain weights.
    q["modules_in_block_to_quantize"] = modules_in_block(s);
    json dense = json::array();
    for (int l = 0; l < s.config->num_hidden_layers; ++l)
      for (int i = 0; i < kNumLinears; ++i)
        if (!s.quantized[size_t(i)]) dense.push_back(cat("model.layers.", l, ".", linear_name(i)));
    q["modules_not_quantized"] = dense;
  }
  return q;
}

void write_model_folder(const std::string& dir, const OutputSpec& s) {
  const LlamaConfig& c = *s.config;
  const TensorStore& src = *s.source;
  std::error_code ec;
  fs::create_directory(dir, ec);
  if (ec) fail(dir, ": cannot create: ", ec.message());

  // Every tensor of the output, by name (the file lists them sorted).
  struct Entry {
    const TensorView* view;
    bool from_source;
  };
  std::map<std::string, Entry> entries;
  std::vector<std::unique_ptr<SafetensorsFile>> layer_files;
  auto take = [&](const std::string& name) { entries[name] = {&src.get(name), true}; };
  take("model.embed_tokens.weight");
  take("model.norm.weight");
  if (!c.tie_word_embeddings) take("lm_head.weight");
  MH_CHECK(int(s.layer_files.size()) == c.num_hidden_layers, "output: missing layer checkpoints");
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = cat("model.layers.", l, ".");
    take(p + "input_layernorm.weight");
    take(p + "post_attention_layernorm.weight");
    for (int i = 0; i < kNumLinears; ++i)
      if (!s.quantized[size_t(i)]) take(p + linear_name(i) + ".weight");
    layer_files.push_back(std::make_unique<SafetensorsFile>(s.layer_files[size_t(l)]));
    for (const TensorView& t : layer_files.back()->tensors()) {
      MH_CHECK(t.name.rfind(p, 0) == 0, s.layer_files[size_t(l)], ": holds tensor '", t.name, "' of another layer");
      entries[t.name] = {&t, false};
    }
  }

  SafetensorsWriter w(dir + "/model.safetensors");
  w.set_metadata("format", "pt");
  w.set_metadata("quantized_by", std::string("metharme ") + METHARME_VERSION);
  w.set_metadata("gptq_bits", std::to_string(s.qc.bits));
  w.set_metadata("gptq_group_size", std::to_string(s.qc.group_size > 0 ? s.qc.group_size : -1));
  w.set_metadata("gptq_desc_act", s.qc.act_order ? "true" : "false");
  w.set_metadata("gptq_checkpoint_format", s.format == PackFormat::kGptqV2 ? "gptq_v2" : "gptq");
  w.set_metadata("gptq_layout", pack_format_name(s.format));
  for (const auto& [name, e] : entries) w.declare(name, e.view->dtype, e.view->shape);
  for (const auto& [name, e] : entries) {
    w.write_tensor(name, e.view->data);
    if (e.from_source) release_pages(e.view->data, e.view->nbytes);
  }
  w.commit();
  layer_files.clear();

  json cfg = c.raw;
  cfg["quantization_config"] = quantization_config_json(s, true);
  write_file_atomic(dir + "/config.json", cfg.dump(2) + "\n");
  write_file_atomic(dir + "/quantize_config.json", quantization_config_json(s, false).dump(2) + "\n");
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "added_tokens.json", "generation_config.json"}) {
    fs::path from = fs::path(s.model_dir) / f;
    if (fs::exists(from)) write_file_atomic(dir + "/" + f, read_text_file(from.string()));
  }
  write_file_atomic(dir + "/quant_log.json", s.log.dump(1) + "\n");
}

}  // namespace metharme::quant
