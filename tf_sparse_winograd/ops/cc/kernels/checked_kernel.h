// A packed kernel's row pointers and column indices, checked once per op node instead of on
// every call.
//
// Checking a kernel reads all of its column indices: about 0.1 ms for a 256 x 256 F(4x4) layer
// at density 0.4, a quarter of the op's time at batch 1. The checked arrays are copied (the
// columns as 16 bits when they fit, which also cuts the products' weight traffic by a quarter),
// the kernel reads only the copies, and the copies are cached per op node, keyed by the
// buffers of the index tensors. The cache holds a reference to those tensors, so that their
// buffers can be neither freed and reused for other data nor updated in place while cached:
// TensorFlow copies a variable's buffer before updating it when a reader still holds it, and
// constants never change. (TF1 reference variables are updated in place regardless: a kernel
// held in one and assigned new indices of the same size keeps its old sparsity pattern here,
// with its new values. The copies keep every index in range whatever happens to the inputs.)
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_CHECKED_KERNEL_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_CHECKED_KERNEL_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "sparse_dense.h"
#include "sparse_products_jit.h"
#include "sparse_winograd_conv2d.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/errors.h"

namespace tfsw {

// The index arrays the kernel reads: all in range, row_ptr non-decreasing from 0 to nnz.
struct CheckedKernel {
  std::vector<int32_t> row_ptr;      // a^2 * filters + 1
  std::vector<uint16_t> col_idx16;   // when in_channels <= 65536 (else empty)
  std::vector<int32_t> col_idx;      // when in_channels > 65536 (else empty)
  std::vector<uint8_t> row_kind;     // kRow* bits per row (see ScanColumnsFn)
};

// Checks the CSR arrays of a kernel of a^2 * filters rows and `channels` input channels
// (row_ptr: a^2 * filters + 1 int32, col_idx: int32; their shapes were checked) and returns the
// checked copies, or InvalidArgument naming the first bad element.
absl::Status CheckKernel(const IsaKernel& kernel, const tensorflow::Tensor& row_ptr,
                         const tensorflow::Tensor& col_idx, int64_t channels, int64_t filters,
                         std::shared_ptr<const CheckedKernel>* checked);

// The products of a checked kernel as generated code (sparse_products_jit.h), or the reason
// there is none (then the CSR loop runs the kernel). The code holds a copy of the values in its
// own order, so it depends on the values tensor too.
struct GeneratedProducts {
  std::unique_ptr<JitProducts> code;
  std::string why_not;
};

// The products of `checked` (checked from the tensors row_ptr and col_idx; a^2 = `coordinates`)
// with `values` (as long as col_idx) for vectors of `vector_width` lanes, generated if their
// code takes at most kJitCodeCap bytes. Not generating is not an error: *generated then says why
// not. Nodes that meet the same tensors share one copy: a process-wide registry finds code that
// another node generated for the same buffers and is still holding (with references to those
// buffers, so that they cannot have been reused for other data), e.g. the nodes of a graph that
// all read one constant kernel, or the graphs of a function traced again for a new input shape.
absl::Status GenerateProducts(const tensorflow::Tensor& row_ptr, const tensorflow::Tensor& col_idx,
                              const tensorflow::Tensor& values, const CheckedKernel& checked,
                              int64_t coordinates, int64_t channels, int64_t filters,
                              int vector_width,
                              std::shared_ptr<const GeneratedProducts>* generated);

// A sparse fully connected kernel in the layout the kernel reads (see DenseParams): rows by unit
// group, feature block and output unit, all indices in range, row_ptr non-decreasing from 0 to
// nnz, col_idx followed by kDenseIndexPadding readable bytes. Of a kernel given in that layout
// ('unit_groups') the row pointers are copied (`owned_row_ptr`) and the columns and values read
// in place, `tensors` holding their buffers (see CheckedCache). A kernel given by input feature
// ('feature_rows') is regrouped into `owned_*` copies, values included.
struct CheckedDenseKernel {
  int64_t feature_blocks = 0;
  const int32_t* row_ptr = nullptr;  // DenseKernelRows(feature_blocks, units) + 1
  const uint8_t* col_idx = nullptr;  // place of the feature in its block
  const float* values = nullptr;
  std::vector<tensorflow::Tensor> tensors;
  std::vector<int32_t> owned_row_ptr;
  std::vector<uint8_t> owned_col_idx;
  std::vector<float> owned_values;
};

// Checks a kernel given as CSR rows by input feature (row_ptr: in_features + 1 int32; col_idx:
// int16 or int32 output units; values: float; their shapes were checked) and returns it
// regrouped, or InvalidArgument naming the first bad element.
absl::Status CheckDenseKernel(const DenseIsaKernel& kernel, const tensorflow::Tensor& row_ptr,
                              const tensorflow::Tensor& col_idx, const tensorflow::Tensor& values,
                              int64_t units, std::shared_ptr<const CheckedDenseKernel>* checked);

// Checks a kernel given in the kernel's own layout (row_ptr: DenseKernelRows(feature_blocks,
// units) + 1 int32; col_idx: uint8, nnz + kDenseIndexPadding; values: float, nnz; their shapes
// were checked), copying only its row pointers: the rows past the last unit must be empty and the
// columns of the last feature block below in_features' remainder. InvalidArgument names the
// first bad element.
absl::Status CheckDenseKernelInPlace(const DenseIsaKernel& kernel,
                                     const tensorflow::Tensor& row_ptr,
                                     const tensorflow::Tensor& col_idx,
                                     const tensorflow::Tensor& values, int64_t in_features,
                                     int64_t units,
                                     std::shared_ptr<const CheckedDenseKernel>* checked);

// The last few kernels one op node checked (an op node usually sees one; an eager kernel shared
// by several layers sees several), keyed by the buffers of N input tensors and S sizes the
// check depended on. Thread-safe.
template <typename Checked, int N, int S = 2>
class CheckedCache {
 public:
  using Tensors = std::array<const tensorflow::Tensor*, N>;
  using Sizes = std::array<int64_t, S>;

  // The checked copy made from these tensors: the cached one, else the one `check(checked)`
  // makes, which is then cached. The check runs outside the lock: two calls that meet a new
  // kernel at once may both check it, and the first copy inserted is kept.
  template <class Check>
  absl::Status Get(const Tensors& tensors, const Sizes& sizes, Check check,
                   std::shared_ptr<const Checked>* checked) {
    *checked = Find(tensors, sizes);
    if (*checked != nullptr) return absl::OkStatus();
    TF_RETURN_IF_ERROR(check(checked));
    Insert(tensors, sizes, *checked);
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<const Checked> Find(const Tensors& tensors, const Sizes& sizes) {
    absl::MutexLock lock(&mu_);
    for (size_t i = entries_.size(); i-- > 0;) {
      if (entries_[i].Matches(tensors, sizes)) {
        std::rotate(entries_.begin() + i, entries_.begin() + i + 1, entries_.end());
        return entries_.back().checked;
      }
    }
    return nullptr;
  }

  void Insert(const Tensors& tensors, const Sizes& sizes, std::shared_ptr<const Checked> checked) {
    absl::MutexLock lock(&mu_);
    for (const Entry& e : entries_) {
      if (e.Matches(tensors, sizes)) return;  // checked by another call
    }
    if (entries_.size() == kCapacity) entries_.erase(entries_.begin());
    Entry entry;
    for (int i = 0; i < N; ++i) entry.tensors[i] = *tensors[i];
    entry.sizes = sizes;
    entry.checked = std::move(checked);
    entries_.push_back(std::move(entry));
  }

  struct Entry {
    std::array<tensorflow::Tensor, N> tensors;  // references that keep the buffers unchanged
    Sizes sizes;
    std::shared_ptr<const Checked> checked;

    bool Matches(const Tensors& other, const Sizes& other_sizes) const {
      for (int i = 0; i < N; ++i) {
        if (other[i]->data() != tensors[i].data() ||
            other[i]->NumElements() != tensors[i].NumElements()) {
          return false;
        }
      }
      return other_sizes == sizes;
    }
  };
  static constexpr size_t kCapacity = 4;

  absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);  // most recently used last
};

}  // namespace tfsw

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_CHECKED_KERNEL_H_
