#include "checked_kernel.h"

#include <algorithm>
#include <utility>

namespace tfsw {

using ::tensorflow::Tensor;
using ::tensorflow::errors::InvalidArgument;

absl::Status CheckKernel(const IsaKernel& kernel, const Tensor& row_ptr, const Tensor& col_idx,
                         int64_t channels, int64_t filters,
                         std::shared_ptr<const CheckedKernel>* checked) {
  const int64_t num_rows = row_ptr.NumElements() - 1;
  const int64_t nnz = col_idx.NumElements();
  const int32_t* rp = row_ptr.flat<int32_t>().data();
  if (rp[0] != 0) return InvalidArgument("row_ptr[0] must be 0. Received: row_ptr[0]=", rp[0]);
  // A vectorised scan first; the slow search for the message only on error.
  if (!kernel.non_decreasing(rp, num_rows + 1)) {
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

bool CheckedKernelCache::Entry::Matches(const Tensor& r, const Tensor& c, int64_t ch,
                                        int64_t f) const {
  return r.data() == row_ptr.data() && r.NumElements() == row_ptr.NumElements() &&
         c.data() == col_idx.data() && c.NumElements() == col_idx.NumElements() &&
         ch == channels && f == filters;
}

std::shared_ptr<const CheckedKernel> CheckedKernelCache::Find(const Tensor& row_ptr,
                                                              const Tensor& col_idx,
                                                              int64_t channels,
                                                              int64_t filters) {
  absl::MutexLock lock(&mu_);
  for (size_t i = entries_.size(); i-- > 0;) {
    if (entries_[i].Matches(row_ptr, col_idx, channels, filters)) {
      std::rotate(entries_.begin() + i, entries_.begin() + i + 1, entries_.end());
      return entries_.back().checked;
    }
  }
  return nullptr;
}

void CheckedKernelCache::Insert(const Tensor& row_ptr, const Tensor& col_idx, int64_t channels,
                                int64_t filters, std::shared_ptr<const CheckedKernel> checked) {
  absl::MutexLock lock(&mu_);
  for (const Entry& e : entries_) {
    if (e.Matches(row_ptr, col_idx, channels, filters)) return;  // checked by another call
  }
  if (entries_.size() == kCapacity) entries_.erase(entries_.begin());
  entries_.push_back(Entry{row_ptr, col_idx, channels, filters, std::move(checked)});
}

}  // namespace tfsw
