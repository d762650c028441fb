// What the OpKernels share: checks of the arguments they have in common, the choice of the
// per-ISA kernel and the way work units run on TensorFlow's intra-op thread pool.
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_OP_RUNTIME_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_OP_RUNTIME_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
#include "sparse_dense.h"
#include "sparse_winograd_conv2d.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/threadpool.h"

namespace tfsw {

// The `activation` attr ('none' or 'relu'): *relu = true for 'relu'.
absl::Status GetReluAttr(tensorflow::OpKernelConstruction* ctx, bool* relu);

// InvalidArgument naming the first of the (name, tensor) pairs that is not rank 1.
absl::Status CheckVectors(
    std::initializer_list<std::pair<const char*, const tensorflow::Tensor*>> tensors);

// A packed kernel's `values` are as long as its `col_idx`; `bias` is empty or has one value per
// output (`outputs`, called `outputs_name` in the message).
absl::Status CheckValuesAndBias(const tensorflow::Tensor& col_idx,
                                const tensorflow::Tensor& values, const tensorflow::Tensor& bias,
                                int64_t outputs, const char* outputs_name);

// `bias` is empty or has one value per output (`outputs`, called `outputs_name` in the message).
absl::Status CheckBias(const tensorflow::Tensor& bias, int64_t outputs, const char* outputs_name);

// The kernels the ops run, both for the one instruction set of the process: the best one this
// CPU runs (chosen once, from the CPU's features), unless another was forced with tfsw_force_isa
// (below).
const IsaKernel& SelectConvKernel();
const DenseIsaKernel& SelectDenseKernel();

// Runs one work unit with the calling thread's scratch (`scratch_floats` floats, 64-byte
// aligned). `thread_state` starts at -1 for each thread taking part in one RunWorkUnits call,
// and keeps what the unit function leaves in it between that thread's units.
using WorkUnitFn = std::function<void(int64_t unit, float* scratch, int64_t* thread_state)>;

// Runs units [0, units) on the calling thread and on helper threads of `workers`, and returns once
// all are done; ResourceExhausted naming `op_name` if a thread's scratch could not be allocated
// (its units did not run). Units are handed out one at a time from a shared counter: the caller
// starts at once and does every unit itself if no helper wakes in time (waking a sleeping pool
// thread takes tens of microseconds on a virtual machine, as long as a whole batch-1 layer; a
// fork-join ParallelFor made every call wait for it, about 60 us per call measured).
absl::Status RunWorkUnits(const char* op_name, tensorflow::thread::ThreadPool* workers,
                          int64_t units, int64_t scratch_floats, WorkUnitFn run_unit);

}  // namespace tfsw

// The instruction-set choice, called through ctypes by tf_sparse_winograd/ops/isa.py (a process
// setting, not an attribute: one process runs one CPU). Names: "generic", "avx2", "avx512".
extern "C" {
// Comma-separated names of the kernels this CPU runs, best last.
__attribute__((visibility("default"))) const char* tfsw_cpu_isas();
// Name of the kernel the ops run now.
__attribute__((visibility("default"))) const char* tfsw_active_isa();
// Makes the ops run the kernel `name` (nullptr or "": the best one again). Returns 0, or 1 if
// `name` is not a kernel's name, 2 if this CPU cannot run it (nothing changes then). Calls
// running meanwhile finish with the kernel they started with.
__attribute__((visibility("default"))) int tfsw_force_isa(const char* name);
}

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_OP_RUNTIME_H_
