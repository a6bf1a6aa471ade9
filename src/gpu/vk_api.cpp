#include "gpu/vk_api.h"

#include <dlfcn.h>

#include <mutex>

namespace metharme::gpu {

VkApi* vk_global(std::string* why) {
  static VkApi api;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      error = "no Vulkan loader (libvulkan.so.1) on this machine";
      return;
    }
    api.vkGetInstanceProcAddr = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
    if (api.vkGetInstanceProcAddr)
      api.vkCreateInstance =
          reinterpret_cast<PFN_vkCreateInstance>(api.vkGetInstanceProcAddr(nullptr, "vkCreateInstance"));
    if (!api.vkCreateInstance) error = "the Vulkan loader lacks vkCreateInstance";
  });
  if (!error.empty()) {
    if (why) *why = error;
    return nullptr;
  }
  return &api;
}

bool vk_load_instance(VkApi& api, VkInstance inst) {
  bool ok = true;
#define MH_LOAD(f) ok = ok && (api.f = reinterpret_cast<PFN_##f>(api.vkGetInstanceProcAddr(inst, #f)));
  MH_VK_INSTANCE_FNS(MH_LOAD)
#undef MH_LOAD
  return ok;
}

bool vk_load_device(VkApi& api, VkDevice dev) {
  bool ok = true;
#define MH_LOAD(f) ok = ok && (api.f = reinterpret_cast<PFN_##f>(api.vkGetDeviceProcAddr(dev, #f)));
  MH_VK_DEVICE_FNS(MH_LOAD)
#undef MH_LOAD
  return ok;
}

const char* vk_result_name(VkResult r) {
  switch (r) {
    case VK_SUCCESS:
      return "VK_SUCCESS";
    case VK_TIMEOUT:
      return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
      return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
      return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_OUT_OF_POOL_MEMORY:
      return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default:
      return "VkResult error";
  }
}

}  // namespace metharme::gpu
