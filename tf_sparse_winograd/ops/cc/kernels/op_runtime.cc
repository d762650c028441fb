#include "op_runtime.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>

namespace tfsw {

using ::tensorflow::Tensor;
using ::tensorflow::errors::InvalidArgument;

namespace {

// Grow-only, 64-byte aligned scratch memory, one per thread.
float* ThreadScratch(int64_t floats) {
  struct Buffer {
    float* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (buffer.size < floats) {
    std::free(buffer.data);
    const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
    buffer.data = static_cast<float*>(std::aligned_alloc(64, bytes));
    buffer.size = buffer.data == nullptr ? 0 : floats;
  }
  return buffer.data;
}

// The units of one RunWorkUnits call, co-owned by the helpers: a helper that starts late finds
// no unit left and touches nothing but this object.
struct SharedUnits {
  SharedUnits(int64_t units, int64_t scratch_floats, WorkUnitFn run_unit)
      : units(units), scratch_floats(scratch_floats), run_unit(std::move(run_unit)) {}

  void Run() {
    float* scratch = nullptr;
    int64_t thread_state = -1;
    for (int64_t unit = next.fetch_add(1); unit < units; unit = next.fetch_add(1)) {
      if (scratch == nullptr) scratch = ThreadScratch(scratch_floats);
      if (scratch == nullptr) {
        out_of_memory = true;
      } else {
        run_unit(unit, scratch, &thread_state);
      }
      done.fetch_add(1, std::memory_order_release);
    }
  }

  // Units taken by a helper are already running, so this spin is short.
  void WaitUntilDone() const {
    while (done.load(std::memory_order_acquire) < units) std::this_thread::yield();
  }

  const int64_t units;
  const int64_t scratch_floats;
  const WorkUnitFn run_unit;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> out_of_memory{false};
};

}  // namespace

namespace {

// The kernels of both ops for one instruction set.
struct IsaKernels {
  const char* name;
  IsaKernel conv;
  DenseIsaKernel dense;
};

// The per-ISA kernels and what this CPU runs, determined once.
struct Kernels {
  IsaKernels generic{"generic", GenericKernel(), GenericDenseKernel()};
  IsaKernels avx2{"avx2", Avx2Kernel(), Avx2DenseKernel()};
  IsaKernels avx512{"avx512", Avx512Kernel(), Avx512DenseKernel()};
  bool has_avx2 = false;
  bool has_avx512 = false;
  std::string cpu_isas;

  Kernels() {
    __builtin_cpu_init();
    has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    has_avx512 = __builtin_cpu_supports("avx512f") != 0;
    cpu_isas = std::string("generic") + (has_avx2 ? ",avx2" : "") + (has_avx512 ? ",avx512" : "");
  }

  const IsaKernels& Best() const { return has_avx512 ? avx512 : has_avx2 ? avx2 : generic; }
};

const Kernels& AllKernels() {
  static const Kernels kernels;
  return kernels;
}

// The one instruction-set choice of the process, for both ops.
std::atomic<const IsaKernels*> forced_kernels{nullptr};

const IsaKernels& ActiveKernels() {
  const IsaKernels* forced = forced_kernels.load(std::memory_order_acquire);
  return forced != nullptr ? *forced : AllKernels().Best();
}

}  // namespace

const IsaKernel& SelectConvKernel() { return ActiveKernels().conv; }

const DenseIsaKernel& SelectDenseKernel() { return ActiveKernels().dense; }

absl::Status GetReluAttr(tensorflow::OpKernelConstruction* ctx, bool* relu) {
  std::string activation;
  TF_RETURN_IF_ERROR(ctx->GetAttr("activation", &activation));
  if (activation != "none" && activation != "relu") {
    return InvalidArgument("activation must be none or relu. Received: activation=", activation);
  }
  *relu = activation == "relu";
  return absl::OkStatus();
}

absl::Status CheckVectors(std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
  for (const auto& [name, t] : tensors) {
    if (t->dims() != 1) {
      return InvalidArgument(name, " must be rank 1. Received: ", name, ".shape=",
                             t->shape().DebugString());
    }
  }
  return absl::OkStatus();
}

absl::Status CheckValuesAndBias(const Tensor& col_idx, const Tensor& values, const Tensor& bias,
                                int64_t outputs, const char* outputs_name) {
  if (values.NumElements() != col_idx.NumElements()) {
    return InvalidArgument("values and col_idx must have the same length. Received: values.shape=",
                           values.shape().DebugString(), ", col_idx.shape=",
                           col_idx.shape().DebugString());
  }
  return CheckBias(bias, outputs, outputs_name);
}

absl::Status CheckBias(const Tensor& bias, int64_t outputs, const char* outputs_name) {
  if (bias.NumElements() != 0 && bias.NumElements() != outputs) {
    return InvalidArgument("bias must have 0 or ", outputs_name, " = ", outputs,
                           " elements. Received: bias.shape=", bias.shape().DebugString());
  }
  return absl::OkStatus();
}

absl::Status RunWorkUnits(const char* op_name, tensorflow::thread::ThreadPool* workers,
                          int64_t units, int64_t scratch_floats, WorkUnitFn run_unit) {
  auto work = std::make_shared<SharedUnits>(units, scratch_floats, std::move(run_unit));
  // The calling thread works too, so one helper less than the pool has threads.
  const int64_t helpers = std::min<int64_t>(workers->NumThreads(), units) - 1;
  for (int64_t h = 0; h < helpers; ++h) workers->Schedule([work] { work->Run(); });
  work->Run();
  work->WaitUntilDone();
  if (work->out_of_memory) {
    return tensorflow::errors::ResourceExhausted(op_name, " could not allocate ",
                                                 scratch_floats * 4, " bytes of scratch");
  }
  return absl::OkStatus();
}

}  // namespace tfsw

extern "C" const char* tfsw_cpu_isas() { return tfsw::AllKernels().cpu_isas.c_str(); }

extern "C" const char* tfsw_active_isa() { return tfsw::ActiveKernels().name; }

extern "C" int tfsw_force_isa(const char* name) {
  const tfsw::Kernels& k = tfsw::AllKernels();
  const std::string want = name == nullptr ? "" : name;
  const tfsw::IsaKernels* kernels = nullptr;
  if (want.empty()) {
    kernels = nullptr;
  } else if (want == "generic") {
    kernels = &k.generic;
  } else if (want == "avx2") {
    if (!k.has_avx2) return 2;
    kernels = &k.avx2;
  } else if (want == "avx512") {
    if (!k.has_avx512) return 2;
    kernels = &k.avx512;
  } else {
    return 1;
  }
  tfsw::forced_kernels.store(kernels, std::memory_order_release);
  return 0;
}
