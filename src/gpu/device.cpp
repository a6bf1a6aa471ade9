#include "gpu/device.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "gpu/subgroup.h"
#include "gpu/vk_api.h"
#include "util/error.h"

namespace metharme::gpu {

namespace {
#include "gpu/shaders.inc"  // kEmbeddedFiles: the SPIR-V of src/gpu/shaders/*.comp

struct ShaderDef {
  const char* file;
  uint32_t bindings;
};
constexpr ShaderDef kShaders[] = {
    {"q4_matmul.spv", 8},    {"dense_matmul.spv", 3},    {"rmsnorm.spv", 3},       {"rope.spv", 4},
    {"kv_store.spv", 5},     {"attention.spv", 5},       {"silu_mul.spv", 2},      {"add.spv", 2},
    {"i8_matmul.spv", 5},    {"attention_tiled.spv", 5}, {"q4_matmul_sg.spv", 8},  {"dense_matmul_sg.spv", 3},
    {"i8_matmul_sg.spv", 5}, {"q4_prefill_sg.spv", 8},   {"i8_prefill_sg.spv", 5},
};
static_assert(sizeof(kShaders) / sizeof(kShaders[0]) == size_t(Shader::kCount));
constexpr uint32_t kPushBytes = 128;
constexpr uint32_t kMaxGroups = 65535;  // the per-dimension minimum every device supports

// A Vulkan struct with its sType set and every other member zero.
template <class T>
T vk_struct(VkStructureType type) {
  T s{};
  s.sType = type;
  return s;
}

void check(VkResult r, const char* what) {
  if (r != VK_SUCCESS) fail("Vulkan: ", what, " failed (", vk_result_name(r), ")");
}

// One instance per process use; the loader and ICD choice come from the environment
// (VK_ICD_FILENAMES selects a driver, e.g. Mesa's lavapipe).
VkInstance make_instance(VkApi& api, std::string* why) {
  auto app = vk_struct<VkApplicationInfo>(VK_STRUCTURE_TYPE_APPLICATION_INFO);
  app.pApplicationName = "metharme";
  app.apiVersion = VK_API_VERSION_1_1;
  auto ci = vk_struct<VkInstanceCreateInfo>(VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO);
  ci.pApplicationInfo = &app;
  VkInstance inst = VK_NULL_HANDLE;
  VkResult r = api.vkCreateInstance(&ci, nullptr, &inst);
  if (r != VK_SUCCESS) {
    *why = cat("no Vulkan driver (vkCreateInstance: ", vk_result_name(r), ")");
    return VK_NULL_HANDLE;
  }
  if (!vk_load_instance(api, inst)) {
    *why = "the Vulkan loader lacks a Vulkan 1.1 entry point";
    return VK_NULL_HANDLE;
  }
  return inst;
}

const char* type_name(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return "cpu";
    default:
      return "other";
  }
}

int compute_family(VkApi& api, VkPhysicalDevice pd) {
  uint32_t n = 0;
  api.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> qf(n);
  api.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, qf.data());
  for (uint32_t i = 0; i < n; ++i)
    if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) return int(i);
  return -1;
}

DeviceInfo describe(VkApi& api, VkPhysicalDevice pd, int index) {
  auto sub = vk_struct<VkPhysicalDeviceSubgroupProperties>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES);
  auto p2 = vk_struct<VkPhysicalDeviceProperties2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2);
  p2.pNext = &sub;
  api.vkGetPhysicalDeviceProperties2(pd, &p2);
  const VkPhysicalDeviceProperties& p = p2.properties;
  DeviceInfo d;
  d.index = index;
  d.name = p.deviceName;
  d.type = type_name(p.deviceType);
  d.api = cat(VK_API_VERSION_MAJOR(p.apiVersion), ".", VK_API_VERSION_MINOR(p.apiVersion), ".",
              VK_API_VERSION_PATCH(p.apiVersion));
  d.subgroup_size = sub.subgroupSize;
  describe_subgroups(api, pd, sub, d);
  d.max_buffer_bytes = p.limits.maxStorageBufferRange;
  VkPhysicalDeviceMemoryProperties mp;
  api.vkGetPhysicalDeviceMemoryProperties(pd, &mp);
  for (uint32_t h = 0; h < mp.memoryHeapCount; ++h)
    if (mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      d.device_local_heaps.push_back(mp.memoryHeaps[h].size);
  d.usable = compute_family(api, pd) >= 0;
  return d;
}

std::vector<VkPhysicalDevice> physical_devices(VkApi& api, VkInstance inst) {
  uint32_t n = 0;
  api.vkEnumeratePhysicalDevices(inst, &n, nullptr);
  std::vector<VkPhysicalDevice> pds(n);
  if (n) api.vkEnumeratePhysicalDevices(inst, &n, pds.data());
  pds.resize(n);
  return pds;
}

struct VkBuf {
  VkBuffer buf = VK_NULL_HANDLE;
  VkDeviceMemory mem = VK_NULL_HANDLE;
  size_t bytes = 0;
};

struct Pipeline {
  VkDescriptorSetLayout dsl = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkPipeline pipe = VK_NULL_HANDLE;
};

struct PendingOut {
  size_t staging_offset;
  void* dst;
  size_t bytes;
};

}  // namespace

const char* features_used() {
  return "Vulkan 1.1 compute, 32-bit storage buffers, push constants (128 B), up to 12 KiB of shared memory per "
         "workgroup (16 KiB is guaranteed); optional: subgroup basic + arithmetic (and shuffle, for int4 and "
         "int8-code prefill) in compute shaders (the _sg matmuls; METHARME_VK_SUBGROUPS=0 turns them off)";
}

std::vector<DeviceInfo> list_devices(std::string* why) {
  std::string local;
  if (!why) why = &local;
  VkApi* g = vk_global(why);
  if (!g) return {};
  VkApi api = *g;
  VkInstance inst = make_instance(api, why);
  if (!inst) return {};
  std::vector<DeviceInfo> out;
  auto pds = physical_devices(api, inst);
  for (size_t i = 0; i < pds.size(); ++i) out.push_back(describe(api, pds[i], int(i)));
  api.vkDestroyInstance(inst, nullptr);
  if (out.empty()) *why = "the Vulkan loader reports no device";
  return out;
}

struct Context::Impl {
  VkApi api;
  DeviceInfo info;
  VkInstance inst = VK_NULL_HANDLE;
  VkPhysicalDevice pd = VK_NULL_HANDLE;
  VkDevice dev = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  VkCommandPool cmd_pool = VK_NULL_HANDLE;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  VkDescriptorPool desc_pool = VK_NULL_HANDLE;
  Pipeline pipes[size_t(Shader::kCount)];
  uint32_t mem_device = 0, mem_host = 0;
  std::vector<VkBuf> bufs;
  size_t allocated = 0;
  VkBuf staging;
  void* mapped = nullptr;
  size_t cursor = 0;
  std::vector<PendingOut> outs;
  bool recording = false, any_recorded = false, any_dispatch = false;
  long steps = 0, fail_at = 0;  // METHARME_VK_FAIL_SUBMIT: the step that reports a lost device
  bool armed = false;           // set by arm_fail_hook()

  ~Impl() {
    if (dev) {
      api.vkDeviceWaitIdle(dev);
      for (auto& p : pipes) {
        if (p.pipe) api.vkDestroyPipeline(dev, p.pipe, nullptr);
        if (p.layout) api.vkDestroyPipelineLayout(dev, p.layout, nullptr);
        if (p.dsl) api.vkDestroyDescriptorSetLayout(dev, p.dsl, nullptr);
      }
      for (auto& b : bufs) release(b);
      release(staging);
      if (desc_pool) api.vkDestroyDescriptorPool(dev, desc_pool, nullptr);
      if (fence) api.vkDestroyFence(dev, fence, nullptr);
      if (cmd_pool) api.vkDestroyCommandPool(dev, cmd_pool, nullptr);
      api.vkDestroyDevice(dev, nullptr);
    }
    if (inst) api.vkDestroyInstance(inst, nullptr);
  }

  void release(VkBuf& b) {
    if (b.buf) api.vkDestroyBuffer(dev, b.buf, nullptr);
    if (b.mem) api.vkFreeMemory(dev, b.mem, nullptr);
    b = VkBuf{};
  }

  uint32_t pick_memory(uint32_t bits, VkMemoryPropertyFlags want) {
    VkPhysicalDeviceMemoryProperties mp;
    api.vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    for (uint32_t i = 0; i < mp.memoryTypeCount; ++i)
      if ((bits >> i & 1) && (mp.memoryTypes[i].propertyFlags & want) == want) return i;
    fail("Vulkan: device '", info.name, "' has no memory type with the needed properties");
  }

  VkBuf make_buffer(size_t bytes, bool host, const std::string& what) {
    bytes = (std::max<size_t>(bytes, 16) + 15) / 16 * 16;
    VkBuf b;
    b.bytes = bytes;
    auto bi = vk_struct<VkBufferCreateInfo>(VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO);
    bi.size = bytes;
    bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    check(api.vkCreateBuffer(dev, &bi, nullptr, &b.buf), "vkCreateBuffer");
    VkMemoryRequirements req;
    api.vkGetBufferMemoryRequirements(dev, b.buf, &req);
    auto ai = vk_struct<VkMemoryAllocateInfo>(VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO);
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = pick_memory(req.memoryTypeBits,
                                     host ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                                          : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    VkResult r = api.vkAllocateMemory(dev, &ai, nullptr, &b.mem);
    if (r != VK_SUCCESS) {
      api.vkDestroyBuffer(dev, b.buf, nullptr);
      fail("Vulkan: cannot allocate ", bytes, " bytes for ", what, " on '", info.name, "' (", vk_result_name(r), "; ",
           allocated, " bytes already allocated)");
    }
    check(api.vkBindBufferMemory(dev, b.buf, b.mem, 0), "vkBindBufferMemory");
    return b;
  }

  Pipeline& pipeline(Shader s) {
    Pipeline& p = pipes[size_t(s)];
    if (p.pipe) return p;
    const ShaderDef& def = kShaders[size_t(s)];
    const EmbeddedFile* f = kEmbeddedFiles;
    while (f->name && std::strcmp(f->name, def.file) != 0) ++f;
    MH_CHECK(f->name, "Vulkan: shader ", def.file, " is not embedded in this build");
    std::vector<uint32_t> code(f->size / 4);
    std::memcpy(code.data(), f->data, code.size() * 4);
    auto mi = vk_struct<VkShaderModuleCreateInfo>(VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO);
    mi.codeSize = code.size() * 4;
    mi.pCode = code.data();
    VkShaderModule mod;
    check(api.vkCreateShaderModule(dev, &mi, nullptr, &mod), "vkCreateShaderModule");
    std::vector<VkDescriptorSetLayoutBinding> lb(def.bindings);
    for (uint32_t i = 0; i < def.bindings; ++i)
      lb[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    auto dli = vk_struct<VkDescriptorSetLayoutCreateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO);
    dli.bindingCount = def.bindings;
    dli.pBindings = lb.data();
    check(api.vkCreateDescriptorSetLayout(dev, &dli, nullptr, &p.dsl), "vkCreateDescriptorSetLayout");
    VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushBytes};
    auto pli = vk_struct<VkPipelineLayoutCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO);
    pli.setLayoutCount = 1;
    pli.pSetLayouts = &p.dsl;
    pli.pushConstantRangeCount = 1;
    pli.pPushConstantRanges = &pr;
    check(api.vkCreatePipelineLayout(dev, &pli, nullptr, &p.layout), "vkCreatePipelineLayout");
    auto ci = vk_struct<VkComputePipelineCreateInfo>(VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO);
    ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                nullptr,
                0,
                VK_SHADER_STAGE_COMPUTE_BIT,
                mod,
                "main",
                nullptr};
    ci.layout = p.layout;
    VkResult r = api.vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &ci, nullptr, &p.pipe);
    api.vkDestroyShaderModule(dev, mod, nullptr);
    check(r, "vkCreateComputePipelines");
    return p;
  }

  // Everything recorded so far is visible to what comes next (one global barrier: simple and
  // correct; finer barriers would let independent dispatches overlap).
  void barrier() {
    if (!any_recorded) return;
    auto mb = vk_struct<VkMemoryBarrier>(VK_STRUCTURE_TYPE_MEMORY_BARRIER);
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                       VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_READ_BIT;
    api.vkCmdPipelineBarrier(
        cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
        VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb,
        0, nullptr, 0, nullptr);
  }

  const VkBuf& get(Buffer b) const {
    MH_CHECK(b.id >= 0 && size_t(b.id) < bufs.size() && bufs[size_t(b.id)].buf, "Vulkan: invalid buffer ", b.id);
    return bufs[size_t(b.id)];
  }
};

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::~Context() = default;
const DeviceInfo& Context::info() const { return impl_->info; }
size_t Context::allocated_bytes() const { return impl_->allocated; }

std::unique_ptr<Context> Context::open(int index) {
  std::string why;
  VkApi* g = vk_global(&why);
  if (!g) fail("Vulkan: ", why);
  auto im = std::make_unique<Impl>();
  Impl& m = *im;
  m.api = *g;
  m.inst = make_instance(m.api, &why);
  if (!m.inst) fail("Vulkan: ", why);
  auto pds = physical_devices(m.api, m.inst);
  if (pds.empty()) fail("Vulkan: the loader reports no device");
  MH_CHECK(index >= 0 && size_t(index) < pds.size(), "Vulkan: --gpu-device ", index, " does not exist (", pds.size(),
           " device", pds.size() == 1 ? "" : "s", "; `metharme info --gpu` lists them)");
  m.pd = pds[size_t(index)];
  m.info = describe(m.api, m.pd, index);
  const int family = compute_family(m.api, m.pd);
  MH_CHECK(family >= 0, "Vulkan: device '", m.info.name, "' has no compute queue");
  float prio = 1.0f;
  auto qi = vk_struct<VkDeviceQueueCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO);
  qi.queueFamilyIndex = uint32_t(family);
  qi.queueCount = 1;
  qi.pQueuePriorities = &prio;
  auto di = vk_struct<VkDeviceCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO);
  di.queueCreateInfoCount = 1;
  di.pQueueCreateInfos = &qi;
  check(m.api.vkCreateDevice(m.pd, &di, nullptr, &m.dev), "vkCreateDevice");
  MH_CHECK(vk_load_device(m.api, m.dev), "Vulkan: the driver lacks a Vulkan 1.1 device entry point");
  m.api.vkGetDeviceQueue(m.dev, uint32_t(family), 0, &m.queue);
  auto pi = vk_struct<VkCommandPoolCreateInfo>(VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO);
  pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pi.queueFamilyIndex = uint32_t(family);
  check(m.api.vkCreateCommandPool(m.dev, &pi, nullptr, &m.cmd_pool), "vkCreateCommandPool");
  auto ai = vk_struct<VkCommandBufferAllocateInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO);
  ai.commandPool = m.cmd_pool;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  check(m.api.vkAllocateCommandBuffers(m.dev, &ai, &m.cmd), "vkAllocateCommandBuffers");
  auto fi = vk_struct<VkFenceCreateInfo>(VK_STRUCTURE_TYPE_FENCE_CREATE_INFO);
  check(m.api.vkCreateFence(m.dev, &fi, nullptr, &m.fence), "vkCreateFence");
  // Sized for a step of ~16 dispatches per layer on models up to a few hundred layers.
  VkDescriptorPoolSize ps{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 65536};
  auto dpi = vk_struct<VkDescriptorPoolCreateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO);
  dpi.maxSets = 8192;
  dpi.poolSizeCount = 1;
  dpi.pPoolSizes = &ps;
  check(m.api.vkCreateDescriptorPool(m.dev, &dpi, nullptr, &m.desc_pool), "vkCreateDescriptorPool");
  if (const char* f = std::getenv("METHARME_VK_FAIL_SUBMIT")) m.fail_at = std::atol(f);
  return std::unique_ptr<Context>(new Context(std::move(im)));
}

Buffer Context::alloc(size_t bytes, const std::string& what) {
  Impl& m = *impl_;
  // Shaders bind whole buffers: one larger than a binding may cover cannot be used.
  MH_CHECK(bytes <= m.info.max_buffer_bytes, "Vulkan: ", what, " needs ", bytes, " bytes in one buffer; '", m.info.name,
           "' binds at most ", m.info.max_buffer_bytes);
  VkBuf b = m.make_buffer(bytes, false, what);
  m.allocated += b.bytes;
  m.bufs.push_back(b);
  return Buffer{int(m.bufs.size() - 1), b.bytes};
}

void Context::free(Buffer& b) {
  if (!b.valid()) return;
  Impl& m = *impl_;
  m.get(b);
  m.allocated -= m.bufs[size_t(b.id)].bytes;
  m.release(m.bufs[size_t(b.id)]);
  b = Buffer{};
}

void Context::reserve_staging(size_t bytes) {
  Impl& m = *impl_;
  MH_CHECK(!m.recording, "Vulkan: staging resized while recording");
  if (m.staging.bytes >= bytes) return;
  if (m.mapped) m.api.vkUnmapMemory(m.dev, m.staging.mem);
  m.mapped = nullptr;
  m.release(m.staging);
  m.staging = m.make_buffer(bytes, true, "the staging buffer");
  check(m.api.vkMapMemory(m.dev, m.staging.mem, 0, VK_WHOLE_SIZE, 0, &m.mapped), "vkMapMemory");
}

void Context::upload(Buffer b, const void* src, size_t bytes, size_t offset) {
  // In chunks of the staging buffer, so uploading a large weight needs no large host mapping.
  constexpr size_t kChunk = size_t(64) << 20;
  reserve_staging(std::min(bytes, kChunk));
  for (size_t done = 0; done < bytes;) {
    size_t n = std::min(bytes - done, impl_->staging.bytes);
    begin();
    stage_in(b, static_cast<const uint8_t*>(src) + done, n, offset + done);
    submit();
    done += n;
  }
}

void Context::download(Buffer b, void* dst, size_t bytes, size_t offset) {
  constexpr size_t kChunk = size_t(64) << 20;
  reserve_staging(std::min(bytes, kChunk));
  for (size_t done = 0; done < bytes;) {
    size_t n = std::min(bytes - done, impl_->staging.bytes);
    begin();
    stage_out(b, static_cast<uint8_t*>(dst) + done, n, offset + done);
    submit();
    done += n;
  }
}

void Context::begin() {
  Impl& m = *impl_;
  // A step that threw while recording is abandoned here: resetting discards it.
  check(m.api.vkResetCommandBuffer(m.cmd, 0), "vkResetCommandBuffer");
  check(m.api.vkResetDescriptorPool(m.dev, m.desc_pool, 0), "vkResetDescriptorPool");
  auto bi = vk_struct<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check(m.api.vkBeginCommandBuffer(m.cmd, &bi), "vkBeginCommandBuffer");
  m.recording = true;
  m.any_recorded = false;
  m.any_dispatch = false;
  m.cursor = 0;
  m.outs.clear();
}

void Context::stage_in(Buffer dst, const void* src, size_t bytes, size_t dst_offset) {
  Impl& m = *impl_;
  const VkBuf& d = m.get(dst);
  MH_CHECK(dst_offset + bytes <= d.bytes, "Vulkan: upload past the end of a buffer");
  MH_CHECK(m.cursor + bytes <= m.staging.bytes, "Vulkan: staging buffer too small (", m.staging.bytes, " bytes)");
  std::memcpy(static_cast<uint8_t*>(m.mapped) + m.cursor, src, bytes);
  m.barrier();
  VkBufferCopy r{m.cursor, dst_offset, bytes};
  m.api.vkCmdCopyBuffer(m.cmd, m.staging.buf, d.buf, 1, &r);
  m.any_recorded = true;
  m.cursor += (bytes + 15) / 16 * 16;
}

void Context::stage_out(Buffer src, void* dst, size_t bytes, size_t src_offset) {
  Impl& m = *impl_;
  const VkBuf& s = m.get(src);
  MH_CHECK(src_offset + bytes <= s.bytes, "Vulkan: download past the end of a buffer");
  MH_CHECK(m.cursor + bytes <= m.staging.bytes, "Vulkan: staging buffer too small (", m.staging.bytes, " bytes)");
  m.barrier();
  VkBufferCopy r{src_offset, m.cursor, bytes};
  m.api.vkCmdCopyBuffer(m.cmd, s.buf, m.staging.buf, 1, &r);
  m.any_recorded = true;
  m.outs.push_back({m.cursor, dst, bytes});
  m.cursor += (bytes + 15) / 16 * 16;
}

void Context::copy(Buffer src, size_t src_offset, Buffer dst, size_t dst_offset, size_t bytes) {
  Impl& m = *impl_;
  const VkBuf& s = m.get(src);
  const VkBuf& d = m.get(dst);
  MH_CHECK(src_offset + bytes <= s.bytes && dst_offset + bytes <= d.bytes, "Vulkan: copy past the end of a buffer");
  m.barrier();
  VkBufferCopy r{src_offset, dst_offset, bytes};
  m.api.vkCmdCopyBuffer(m.cmd, s.buf, d.buf, 1, &r);
  m.any_recorded = true;
}

void Context::dispatch(Shader shader, std::initializer_list<Buffer> bufs, const void* push, size_t push_bytes,
                       uint32_t gx, uint32_t gy) {
  Impl& m = *impl_;
  MH_CHECK(m.recording, "Vulkan: dispatch outside begin()/submit()");
  if (m.info.subgroup_shaders) shader = subgroup_variant(shader);
  const ShaderDef& def = kShaders[size_t(shader)];
  MH_CHECK(bufs.size() == def.bindings && push_bytes <= kPushBytes, "Vulkan: ", def.file, " called with ", bufs.size(),
           " buffers");
  if (gx == 0 || gy == 0) return;
  MH_CHECK(gy <= kMaxGroups, "Vulkan: ", def.file, ": ", gy, " row groups");
  Pipeline& p = m.pipeline(shader);
  auto ai = vk_struct<VkDescriptorSetAllocateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO);
  ai.descriptorPool = m.desc_pool;
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &p.dsl;
  VkDescriptorSet set;
  check(m.api.vkAllocateDescriptorSets(m.dev, &ai, &set), "vkAllocateDescriptorSets");
  VkDescriptorBufferInfo infos[8];
  VkWriteDescriptorSet writes[8];
  uint32_t i = 0;
  for (const Buffer& b : bufs) {
    infos[i] = {m.get(b).buf, 0, VK_WHOLE_SIZE};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, nullptr, set,       i,      0, 1,
                 VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,      nullptr, &infos[i], nullptr};
    ++i;
  }
  m.api.vkUpdateDescriptorSets(m.dev, i, writes, 0, nullptr);
  m.barrier();
  m.api.vkCmdBindPipeline(m.cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipe);
  m.api.vkCmdBindDescriptorSets(m.cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, 1, &set, 0, nullptr);
  uint8_t pc[kPushBytes] = {};
  std::memcpy(pc, push, push_bytes);
  m.api.vkCmdPushConstants(m.cmd, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushBytes, pc);
  // Shaders number their groups x + numX * z, so counts beyond the per-dimension limit fold into z.
  const uint32_t x = std::min(gx, kMaxGroups), z = (gx + x - 1) / x;
  m.api.vkCmdDispatch(m.cmd, x, gy, z);
  m.any_recorded = true;
  m.any_dispatch = true;
}

void Context::submit() {
  Impl& m = *impl_;
  MH_CHECK(m.recording, "Vulkan: submit() without begin()");
  m.barrier();
  m.recording = false;
  check(m.api.vkEndCommandBuffer(m.cmd), "vkEndCommandBuffer");
  // A documented test hook: METHARME_VK_FAIL_SUBMIT=N makes the N-th submit that runs shaders
  // (a forward step; uploads do not count) report a lost device.
  if (m.armed && m.any_dispatch && ++m.steps == m.fail_at)
    fail("Vulkan: ", vk_result_name(VK_ERROR_DEVICE_LOST), " (simulated)");
  auto si = vk_struct<VkSubmitInfo>(VK_STRUCTURE_TYPE_SUBMIT_INFO);
  si.commandBufferCount = 1;
  si.pCommandBuffers = &m.cmd;
  check(m.api.vkResetFences(m.dev, 1, &m.fence), "vkResetFences");
  check(m.api.vkQueueSubmit(m.queue, 1, &si, m.fence), "vkQueueSubmit");
  check(m.api.vkWaitForFences(m.dev, 1, &m.fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
  for (const PendingOut& o : m.outs) std::memcpy(o.dst, static_cast<uint8_t*>(m.mapped) + o.staging_offset, o.bytes);
  m.outs.clear();
}

void Context::arm_fail_hook() {
  impl_->steps = 0;
  impl_->armed = true;
}

}  // namespace metharme::gpu
