// The Vulkan entry points metharme uses, loaded at run time from libvulkan.so.1 so that the
// binary starts (and runs on the CPU) on machines without a Vulkan loader.
#pragma once

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <string>

namespace metharme::gpu {

#define MH_VK_INSTANCE_FNS(X)                 \
  X(vkDestroyInstance)                        \
  X(vkEnumeratePhysicalDevices)               \
  X(vkGetPhysicalDeviceProperties)            \
  X(vkGetPhysicalDeviceProperties2)           \
  X(vkGetPhysicalDeviceMemoryProperties)      \
  X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkEnumerateDeviceExtensionProperties)     \
  X(vkCreateDevice)                           \
  X(vkGetDeviceProcAddr)

#define MH_VK_DEVICE_FNS(X)                                                                                         \
  X(vkDestroyDevice)                                                                                                \
  X(vkGetDeviceQueue)                                                                                               \
  X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) X(vkFreeMemory)         \
      X(vkBindBufferMemory) X(vkMapMemory) X(vkUnmapMemory) X(vkCreateShaderModule) X(vkDestroyShaderModule)        \
          X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) X(vkCreatePipelineLayout)                  \
              X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) X(vkDestroyPipeline) X(vkCreateDescriptorPool) \
                  X(vkDestroyDescriptorPool) X(vkResetDescriptorPool) X(vkAllocateDescriptorSets)                   \
                      X(vkUpdateDescriptorSets) X(vkCreateCommandPool) X(vkDestroyCommandPool)                      \
                          X(vkAllocateCommandBuffers) X(vkBeginCommandBuffer) X(vkEndCommandBuffer)                 \
                              X(vkResetCommandBuffer) X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets)               \
                                  X(vkCmdPushConstants) X(vkCmdDispatch) X(vkCmdPipelineBarrier) X(vkCmdCopyBuffer) \
                                      X(vkQueueSubmit) X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences)        \
                                          X(vkResetFences) X(vkDeviceWaitIdle)

struct VkApi {
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
  PFN_vkCreateInstance vkCreateInstance = nullptr;
#define MH_DECL(f) PFN_##f f = nullptr;
  MH_VK_INSTANCE_FNS(MH_DECL)
  MH_VK_DEVICE_FNS(MH_DECL)
#undef MH_DECL
};

// The process-wide table after dlopen; null with *why set when there is no loader.
VkApi* vk_global(std::string* why);
// Fills the instance-level entries of `api` for `inst`; false if one is missing.
bool vk_load_instance(VkApi& api, VkInstance inst);
bool vk_load_device(VkApi& api, VkDevice dev);
const char* vk_result_name(VkResult r);

}  // namespace metharme::gpu
