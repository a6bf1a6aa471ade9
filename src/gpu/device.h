// A Vulkan compute device: buffers, the embedded shaders as pipelines, and one command buffer
// that a forward step records and submits once. No Vulkan type appears here, so model/ can use
// it without the Vulkan headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace metharme::gpu {

struct DeviceInfo {
  int index = 0;
  std::string name;
  std::string type;  // "discrete", "integrated", "cpu", ...
  std::string api;   // "1.3.230"
  uint32_t subgroup_size = 0;
  uint32_t subgroup_ops = 0;                 // VkSubgroupFeatureFlags in the compute stage (0 if not there)
  bool coop_matrix = false;                  // VK_KHR_cooperative_matrix offered (no shader uses it yet)
  bool subgroup_shaders = false;             // the matmuls run their _sg builds (gpu/subgroup.h)
  bool subgroup_prefill = false;             // and int4 / int8-code prefill run *_prefill_sg (shuffle, 8+ lanes)
  std::string subgroup_note;                 // why not, when subgroup_shaders is false
  std::vector<uint64_t> device_local_heaps;  // bytes of each DEVICE_LOCAL heap
  uint64_t max_buffer_bytes = 0;             // largest range one storage-buffer binding may cover
  bool usable = false;                       // has a compute queue
};

// Every device the loader reports; empty with *why set when there is no loader or no device.
std::vector<DeviceInfo> list_devices(std::string* why);

// The device features the shaders need (printed by `metharme info`).
const char* features_used();

// "basic vote arithmetic ..." for DeviceInfo::subgroup_ops ("none" when empty; gpu/subgroup.cpp).
std::string subgroup_ops_names(uint32_t ops);

// A device buffer: an index into the Context's table (-1 = none) and its size in bytes.
struct Buffer {
  int id = -1;
  size_t bytes = 0;
  bool valid() const { return id >= 0; }
};

enum class Shader : int {
  kQ4Matmul,
  kDenseMatmul,
  kRmsnorm,
  kRope,
  kKvStore,
  kAttention,
  kSiluMul,
  kAdd,
  kI8Matmul,
  kAttentionTiled,
  kQ4MatmulSg,  // subgroup builds of the three matmuls: same bindings and dispatch
  kDenseMatmulSg,
  kI8MatmulSg,
  kQ4PrefillSg,  // int4 / int8 codes for M > 8 rows, one row per invocation (subgroup_prefill devices)
  kI8PrefillSg,
  kCount
};

class Context {
 public:
  // Opens device `index` of list_devices(); throws Error (one line) when that is impossible.
  static std::unique_ptr<Context> open(int index);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceInfo& info() const;
  size_t allocated_bytes() const;

  // Device-local storage buffer (size rounded up to 16 bytes); throws naming `what` on failure.
  Buffer alloc(size_t bytes, const std::string& what);
  void free(Buffer& b);
  // Immediate transfers through the staging buffer (each is its own submit; not for the hot loop).
  void upload(Buffer b, const void* src, size_t bytes, size_t offset = 0);
  void download(Buffer b, void* dst, size_t bytes, size_t offset = 0);

  // Host-visible staging for one step: stage_in/stage_out of up to `bytes` in total.
  void reserve_staging(size_t bytes);

  // Recording one step: begin(), any number of the calls below, submit() (waits for the device).
  void begin();
  void stage_in(Buffer dst, const void* src, size_t bytes, size_t dst_offset = 0);
  void stage_out(Buffer src, void* dst, size_t bytes, size_t src_offset = 0);  // dst written by submit()
  void copy(Buffer src, size_t src_offset, Buffer dst, size_t dst_offset, size_t bytes);
  // Runs `shader` over groups (gx, gy); gx may exceed the device's per-dimension limit (shaders
  // combine gl_WorkGroupID.x and .z). bufs in binding order; push: up to 128 bytes.
  void dispatch(Shader shader, std::initializer_list<Buffer> bufs, const void* push, size_t push_bytes, uint32_t gx,
                uint32_t gy = 1);
  void submit();
  // Arms METHARME_VK_FAIL_SUBMIT (a test hook): the forward steps it counts start here.
  void arm_fail_hook();

  struct Impl;

 private:
  explicit Context(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace metharme::gpu
