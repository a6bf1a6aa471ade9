// Subgroup support: what the device offers, whether the matmuls run their subgroup builds
// (<name>_sg.spv, shaders/matmul_reduce.glsl), and the METHARME_VK_SUBGROUPS switch.
#pragma once

#include <string>

#include "gpu/device.h"
#include "gpu/vk_api.h"

namespace metharme::gpu {

// Fills d.subgroup_ops, d.coop_matrix, d.subgroup_shaders and d.subgroup_note from the device's
// properties and the environment: METHARME_VK_SUBGROUPS=0 forces the plain shaders.
void describe_subgroups(VkApi& api, VkPhysicalDevice pd, const VkPhysicalDeviceSubgroupProperties& sub, DeviceInfo& d);

// The shader a dispatch of `s` runs on a device with d.subgroup_shaders (s itself if it has no
// subgroup build).
Shader subgroup_variant(Shader s);

}  // namespace metharme::gpu
