#include "checked_kernel.h"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>
#include <vector>

namespace tfsw {

using ::tensorflow::Tensor;
using ::tensorflow::errors::InvalidArgument;

namespace {

// row_ptr (num_rows + 1 values) starts at 0, never decreases and ends at nnz.
absl::Status CheckRowPointers(NonDecreasingFn non_decreasing, const int32_t* rp, int64_t num_rows,
                              int64_t nnz) {
  if (rp[0] != 0) return InvalidArgument("row_ptr[0] must be 0. Received: row_ptr[0]=", rp[0]);
  // A vectorised scan first; the slow search for the message only on error.
  if (!non_decreasing(rp, num_rows + 1)) {
    for (int64_t r = 0; r < num_rows; ++r) {
      if (rp[r + 1] < rp[r]) {
        return InvalidArgument("row_ptr must be non-decreasing. Received: row_ptr[", r, "]=",
                               rp[r], " > row_ptr[", r + 1, "]=", rp[r + 1]);
      }
    }
  }
  if (rp[num_rows] != nnz) {
    return InvalidArgument("row_ptr[-1] must equal the number of nonzeros ", nnz,
                           ". Received: row_ptr[-1]=", rp[num_rows]);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckKernel(const IsaKernel& kernel, const Tensor& row_ptr, const Tensor& col_idx,
                         int64_t channels, int64_t filters,
                         std::shared_ptr<const CheckedKernel>* checked) {
  const int64_t num_rows = row_ptr.NumElements() - 1;
  const int64_t nnz = col_idx.NumElements();
  const int32_t* rp = row_ptr.flat<int32_t>().data();
  TF_RETURN_IF_ERROR(CheckRowPointers(kernel.non_decreasing, rp, num_rows, nnz));
  auto result = std::make_shared<CheckedKernel>();
  result->row_ptr.assign(rp, rp + num_rows + 1);
  result->row_kind.resize(num_rows);
  const int32_t* ci = col_idx.flat<int32_t>().data();
  // channels <= INT32_MAX: it was read from an int32 tensor.
  if (!kernel.scan_columns(rp, num_rows, filters, ci, static_cast<int32_t>(channels),
                           result->row_kind.data())) {
    for (int64_t k = 0; k < nnz; ++k) {
      if (ci[k] < 0 || ci[k] >= channels) {
        return InvalidArgument("col_idx must be in [0, in_channels = ", channels,
                               "). Received: col_idx[", k, "]=", ci[k]);
      }
    }
  }
  if (channels <= 65536) {
    result->col_idx16.resize(nnz);
    for (int64_t k = 0; k < nnz; ++k) result->col_idx16[k] = static_cast<uint16_t>(ci[k]);
  } else {
    result->col_idx.assign(ci, ci + nnz);
  }
  *checked = std::move(result);
  return absl::OkStatus();
}

namespace {

// What generated code was made from: the buffers of row_ptr, col_idx and values, their lengths,
// and the sizes the generation depended on.
struct CodeKey {
  std::array<const void*, 3> buffers;
  std::array<int64_t, 7> sizes;
  bool operator==(const CodeKey& other) const {
    return buffers == other.buffers && sizes == other.sizes;
  }
};

// The generated code that some node still holds, by what it was made from (see GenerateProducts).
class CodeRegistry {
 public:
  static CodeRegistry& Get() {
    static CodeRegistry* registry = new CodeRegistry();  // never destroyed: used at exit
    return *registry;
  }

  std::shared_ptr<const GeneratedProducts> Find(const CodeKey& key) {
    absl::MutexLock lock(&mu_);
    for (const auto& [k, code] : entries_) {
      if (k == key) return code.lock();
    }
    return nullptr;
  }

  // Registers `code` (unless live code is registered for `key` already: that one is returned).
  std::shared_ptr<const GeneratedProducts> Insert(const CodeKey& key,
                                                  std::shared_ptr<const GeneratedProducts> code) {
    absl::MutexLock lock(&mu_);
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                  [](const auto& e) { return e.second.expired(); }),
                   entries_.end());
    for (const auto& [k, existing] : entries_) {
      if (k == key) return existing.lock();
    }
    entries_.emplace_back(key, code);
    return code;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<CodeKey, std::weak_ptr<const GeneratedProducts>>> entries_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::Status GenerateProducts(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values,
                              const CheckedKernel& checked, int64_t coordinates, int64_t channels,
                              int64_t filters, int vector_width,
                              std::shared_ptr<const GeneratedProducts>* generated) {
  if (static_cast<int64_t>(checked.row_ptr.size()) != coordinates * filters + 1 ||
      values.NumElements() != checked.row_ptr.back() ||
      row_ptr.NumElements() != static_cast<int64_t>(checked.row_ptr.size())) {
    return tensorflow::errors::Internal("GenerateProducts: the kernel's sizes do not match");
  }
  const CodeKey key{{row_ptr.data(), col_idx.data(), values.data()},
                    {row_ptr.NumElements(), col_idx.NumElements(), values.NumElements(),
                     coordinates, channels, filters, vector_width}};
  *generated = CodeRegistry::Get().Find(key);
  if (*generated != nullptr) return absl::OkStatus();
  JitKernelView view;
  view.coordinates = coordinates;
  view.filters = filters;
  view.channels = channels;
  view.row_ptr = checked.row_ptr.data();
  view.col_idx16 = checked.col_idx16.empty() ? nullptr : checked.col_idx16.data();
  view.col_idx = checked.col_idx.empty() ? nullptr : checked.col_idx.data();
  view.values = values.flat<float>().data();
  auto result = std::make_shared<GeneratedProducts>();
  result->code = JitProducts::Generate(view, vector_width, kJitCodeCap, &result->why_not);
  *generated = CodeRegistry::Get().Insert(key, std::move(result));
  return absl::OkStatus();
}

namespace {

// The regrouping of CheckDenseKernel for one column-index type: checks the columns in place
// (a copy of them as wider integers would take 8 bytes per nonzero at its peak, more than the
// kernel) and counting-sorts the nonzeros into the kernel's rows, stably, so that each row lists
// its features in increasing order.
template <typename Index>
absl::Status RegroupDenseKernel(const int32_t* rp, const Index* cols, const float* v,
                                int64_t in_features, int64_t units, CheckedDenseKernel* result) {
  const int64_t nnz = rp[in_features];
  for (int64_t k = 0; k < nnz; ++k) {
    if (cols[k] < 0 || cols[k] >= units) {
      return InvalidArgument("col_idx must be in [0, units = ", units, "). Received: col_idx[", k,
                             "]=", static_cast<int64_t>(cols[k]));
    }
  }
  const int64_t rows = DenseKernelRows(result->feature_blocks, units);
  std::vector<int32_t>& row_ptr = result->owned_row_ptr;
  row_ptr.assign(rows + 1, 0);
  auto row_of = [fbs = result->feature_blocks](int64_t feature, int64_t unit) {
    return DenseKernelRow(fbs, feature / kDenseFeatureBlock, unit);
  };
  for (int64_t i = 0; i < in_features; ++i) {
    for (int64_t k = rp[i]; k < rp[i + 1]; ++k) ++row_ptr[row_of(i, cols[k]) + 1];
  }
  for (int64_t r = 0; r < rows; ++r) row_ptr[r + 1] += row_ptr[r];
  std::vector<int32_t> next(row_ptr.begin(), row_ptr.end() - 1);
  result->owned_col_idx.assign(nnz + kDenseIndexPadding, 0);
  result->owned_values.resize(nnz);
  for (int64_t i = 0; i < in_features; ++i) {
    for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
      const int32_t at = next[row_of(i, cols[k])]++;
      result->owned_col_idx[at] = static_cast<uint8_t>(i % kDenseFeatureBlock);
      result->owned_values[at] = v[k];
    }
  }
  result->row_ptr = row_ptr.data();
  result->col_idx = result->owned_col_idx.data();
  result->values = result->owned_values.data();
  return absl::OkStatus();
}

absl::Status CheckDenseRowCount(int64_t in_features, int64_t units, int64_t* feature_blocks) {
  *feature_blocks = (in_features + kDenseFeatureBlock - 1) / kDenseFeatureBlock;
  if (DenseKernelRows(*feature_blocks, units) >= std::numeric_limits<int32_t>::max()) {
    return InvalidArgument("The kernel is too large for the op: ceil(in_features / ",
                           kDenseFeatureBlock, ") * units must be below 2^31. Received: ",
                           "in_features=", in_features, ", units=", units);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckDenseKernel(const DenseIsaKernel& kernel, const Tensor& row_ptr,
                              const Tensor& col_idx, const Tensor& values, int64_t units,
                              std::shared_ptr<const CheckedDenseKernel>* checked) {
  const int64_t in_features = row_ptr.NumElements() - 1;
  const int32_t* rp = row_ptr.flat<int32_t>().data();
  TF_RETURN_IF_ERROR(
      CheckRowPointers(kernel.non_decreasing, rp, in_features, col_idx.NumElements()));
  auto result = std::make_shared<CheckedDenseKernel>();
  TF_RETURN_IF_ERROR(CheckDenseRowCount(in_features, units, &result->feature_blocks));
  const float* v = values.flat<float>().data();
  if (col_idx.dtype() == tensorflow::DT_INT16) {
    TF_RETURN_IF_ERROR(RegroupDenseKernel(rp, col_idx.flat<int16_t>().data(), v, in_features,
                                          units, result.get()));
  } else {
    TF_RETURN_IF_ERROR(RegroupDenseKernel(rp, col_idx.flat<int32_t>().data(), v, in_features,
                                          units, result.get()));
  }
  *checked = std::move(result);
  return absl::OkStatus();
}

absl::Status CheckDenseKernelInPlace(const DenseIsaKernel& kernel, const Tensor& row_ptr,
                                     const Tensor& col_idx, const Tensor& values,
                                     int64_t in_features, int64_t units,
                                     std::shared_ptr<const CheckedDenseKernel>* checked) {
  auto result = std::make_shared<CheckedDenseKernel>();
  TF_RETURN_IF_ERROR(CheckDenseRowCount(in_features, units, &result->feature_blocks));
  const int64_t rows = DenseKernelRows(result->feature_blocks, units);
  if (row_ptr.NumElements() != rows + 1) {
    return InvalidArgument("row_ptr must have ceil(units / ", kDenseUnitGroup, ") * ",
                           kDenseUnitGroup, " * ceil(in_features / ", kDenseFeatureBlock,
                           ") + 1 = ", rows + 1, " elements in the 'unit_groups' layout. Received: ",
                           "row_ptr.shape=", row_ptr.shape().DebugString());
  }
  const int64_t nnz = values.NumElements();
  if (col_idx.NumElements() != nnz + kDenseIndexPadding) {
    return InvalidArgument("col_idx must have len(values) + ", kDenseIndexPadding, " = ",
                           nnz + kDenseIndexPadding, " elements in the 'unit_groups' layout (",
                           kDenseIndexPadding, " bytes of padding). Received: col_idx.shape=",
                           col_idx.shape().DebugString());
  }
  // The row pointers bound every read of the kernel: they are copied, and the copy is checked.
  // The columns and values are read in place; a column changed after this check reads an input
  // of its block, or the zeros past in_features (sparse_dense_impl.inc), never out of bounds.
  const int32_t* in = row_ptr.flat<int32_t>().data();
  result->owned_row_ptr.assign(in, in + rows + 1);
  const int32_t* rp = result->owned_row_ptr.data();
  TF_RETURN_IF_ERROR(CheckRowPointers(kernel.non_decreasing, rp, rows, nnz));
  const uint8_t* ci = col_idx.flat<uint8_t>().data();
  const int64_t last_block = result->feature_blocks - 1;
  const int64_t last_block_features = in_features - last_block * kDenseFeatureBlock;
  for (int64_t u = 0; u < (units + kDenseUnitGroup - 1) / kDenseUnitGroup * kDenseUnitGroup; ++u) {
    for (int64_t fb = 0; fb < result->feature_blocks; ++fb) {
      const int64_t r = DenseKernelRow(result->feature_blocks, fb, u);
      if (u >= units && rp[r + 1] != rp[r]) {
        return InvalidArgument("Rows past the last unit must be empty in the 'unit_groups' ",
                               "layout. Received: row ", r, " (unit ", u, " of units = ", units,
                               ") with ", rp[r + 1] - rp[r], " nonzeros");
      }
      if (fb != last_block || last_block_features == kDenseFeatureBlock) continue;
      for (int64_t k = rp[r]; k < rp[r + 1]; ++k) {
        if (ci[k] >= last_block_features) {
          return InvalidArgument("col_idx of the last feature block must be below in_features - ",
                                 last_block * kDenseFeatureBlock, " = ", last_block_features,
                                 ". Received: col_idx[", k, "]=", static_cast<int>(ci[k]));
        }
      }
    }
  }
  result->tensors = {col_idx, values};
  result->row_ptr = rp;
  result->col_idx = ci;
  result->values = values.flat<float>().data();
  *checked = std::move(result);
  return absl::OkStatus();
}

}  // namespace tfsw
