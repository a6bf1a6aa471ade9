#include "gpu/subgroup.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "util/error.h"

namespace metharme::gpu {

namespace {

// What the _sg builds use: subgroupAdd and subgroupElect (basic + arithmetic).
constexpr uint32_t kNeededOps = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
// matmul_reduce.glsl keeps one partial per subgroup for 16 subgroups of the 64-invocation group.
constexpr uint32_t kMinSubgroup = 4;
// q4_prefill_sg.comp and i8_prefill_sg.comp shuffle 8 values (one per column) from lanes 0..7.
constexpr uint32_t kPrefillMinSubgroup = 8;

bool has_extension(VkApi& api, VkPhysicalDevice pd, const char* name) {
  uint32_t n = 0;
  if (api.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkExtensionProperties> ext(n);
  if (n && api.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, ext.data()) != VK_SUCCESS) return false;
  for (uint32_t i = 0; i < n; ++i)
    if (std::strcmp(ext[i].extensionName, name) == 0) return true;
  return false;
}

}  // namespace

void describe_subgroups(VkApi& api, VkPhysicalDevice pd, const VkPhysicalDeviceSubgroupProperties& sub, DeviceInfo& d) {
  d.subgroup_ops = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) ? sub.supportedOperations : 0;
  d.coop_matrix = has_extension(api, pd, "VK_KHR_cooperative_matrix");
  const char* env = std::getenv("METHARME_VK_SUBGROUPS");
  d.subgroup_shaders = d.subgroup_prefill = false;
  if (env && std::strcmp(env, "0") == 0)
    d.subgroup_note = "off (METHARME_VK_SUBGROUPS=0)";
  else if ((d.subgroup_ops & kNeededOps) != kNeededOps)
    d.subgroup_note = "the device lacks subgroup arithmetic in compute shaders";
  else if (sub.subgroupSize < kMinSubgroup)
    d.subgroup_note = cat("subgroups of ", sub.subgroupSize, " invocations (the shaders need ", kMinSubgroup, "+)");
  else
    d.subgroup_shaders = true;
  d.subgroup_prefill = d.subgroup_shaders && (d.subgroup_ops & VK_SUBGROUP_FEATURE_SHUFFLE_BIT) &&
                       sub.subgroupSize >= kPrefillMinSubgroup;
}

std::string subgroup_ops_names(uint32_t ops) {
  static constexpr std::pair<uint32_t, const char*> kNames[] = {
      {VK_SUBGROUP_FEATURE_BASIC_BIT, "basic"},
      {VK_SUBGROUP_FEATURE_VOTE_BIT, "vote"},
      {VK_SUBGROUP_FEATURE_ARITHMETIC_BIT, "arithmetic"},
      {VK_SUBGROUP_FEATURE_BALLOT_BIT, "ballot"},
      {VK_SUBGROUP_FEATURE_SHUFFLE_BIT, "shuffle"},
      {VK_SUBGROUP_FEATURE_SHUFFLE_RELATIVE_BIT, "shuffle-relative"},
      {VK_SUBGROUP_FEATURE_CLUSTERED_BIT, "clustered"},
      {VK_SUBGROUP_FEATURE_QUAD_BIT, "quad"},
  };
  std::string out;
  for (const auto& [bit, name] : kNames)
    if (ops & bit) out += (out.empty() ? "" : " ") + std::string(name);
  return out.empty() ? "none" : out;
}

Shader subgroup_variant(Shader s) {
  switch (s) {
    case Shader::kQ4Matmul:
      return Shader::kQ4MatmulSg;
    case Shader::kDenseMatmul:
      return Shader::kDenseMatmulSg;
    case Shader::kI8Matmul:
      return Shader::kI8MatmulSg;
    default:
      return s;
  }
}

}  // namespace metharme::gpu
