// What the OpKernels share: checks of the arguments they have in common, the choice of the
// per-ISA kernel and the way work units run on TensorFlow's intra-op thread pool.
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_OP_RUNTIME_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_OP_RUNTIME_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
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

// The best kernel this CPU runs. TFSW_ISA=generic|avx2|avx512 may ask for a lower one (tests
// use it to cover every kernel); a request the CPU cannot run falls back to the best one.
const IsaKernel& SelectKernel();

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

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_OP_RUNTIME_H_
