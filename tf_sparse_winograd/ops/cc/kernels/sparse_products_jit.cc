#include "sparse_products_jit.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

// Xbyak, the assembler oneDNN uses, ships with TensorFlow's headers (tf.sysconfig.get_include());
// errors are reported through Xbyak::GetError() instead of exceptions.
#define XBYAK_NO_EXCEPTION
#include "external/onednn/src/cpu/x64/xbyak/xbyak.h"

namespace tfsw {
namespace {

constexpr int64_t kMaxJitDimension = int64_t{1} << 24;

// Bounds of the encodings used (bytes), for the code size bound of EstimateJitProducts.
constexpr int64_t kBlockBytes = 32;       // prologue, zeroing of the zero register, epilogue
constexpr int64_t kCoordinateBytes = 8;   // two register adds
constexpr int64_t kPassBytes = 64;        // set-up and loop of one register block's passes
constexpr int64_t kRebaseBytes = 7;       // add r11, imm32
constexpr int64_t kVectorLoadBytes = 10;  // vmovaps with a 32-bit displacement
constexpr int64_t kStoreBytes = 10;

struct RegisterBlock {
  int64_t first = 0, count = 0;  // filters, counted from the filter block's first
};

// nf filters in ceil(nf / max_filters) register blocks of nearly equal sizes.
std::vector<RegisterBlock> SplitFilters(int64_t nf, int max_filters) {
  std::vector<RegisterBlock> blocks;
  const int64_t n = (nf + max_filters - 1) / max_filters;
  int64_t first = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t count = (nf - first) / (n - i);
    blocks.push_back({first, count});
    first += count;
  }
  return blocks;
}

int MaxRegisterFilters(int vector_width) {
  return vector_width == 16 ? kJitMaxRegisterFilters512 : kJitMaxRegisterFilters256;
}

// One nonzero of a register block: its channel, its filter in the block, its place in values.
struct Entry {
  int32_t channel;
  int32_t filter;
  int64_t index;
};

// Walks the kernel in the order of the code: filter blocks, coordinates, register blocks; for
// each register block, visit(block, p, register_block, entries) with its nonzeros sorted by
// channel, then filter, then place in the row (a stable counting sort).
template <class Visit>
void WalkKernel(const JitKernelView& k, int vector_width, Visit visit) {
  const int max_filters = MaxRegisterFilters(vector_width);
  std::vector<Entry> gathered, sorted;
  std::vector<int64_t> start(k.channels + 1);
  for (int64_t f0 = 0; f0 < k.filters; f0 += kJitFilterBlock) {
    const int64_t nf = std::min(kJitFilterBlock, k.filters - f0);
    const std::vector<RegisterBlock> blocks = SplitFilters(nf, max_filters);
    for (int64_t p = 0; p < k.coordinates; ++p) {
      for (const RegisterBlock& rb : blocks) {
        gathered.clear();
        for (int64_t i = 0; i < rb.count; ++i) {
          const int64_t row = p * k.filters + f0 + rb.first + i;
          for (int64_t e = k.row_ptr[row]; e < k.row_ptr[row + 1]; ++e) {
            const int32_t c = k.col_idx16 != nullptr ? k.col_idx16[e] : k.col_idx[e];
            gathered.push_back({c, static_cast<int32_t>(i), e});
          }
        }
        std::fill(start.begin(), start.end(), 0);
        for (const Entry& e : gathered) ++start[e.channel + 1];
        for (int64_t c = 0; c < k.channels; ++c) start[c + 1] += start[c];
        sorted.resize(gathered.size());
        for (const Entry& e : gathered) sorted[start[e.channel]++] = e;
        visit(f0 / kJitFilterBlock, p, rb, sorted);
      }
    }
  }
}

int64_t RebaseEvery(int vector_width) { return vector_width == 16 ? 256 : 64; }

// The code. Arguments (System V): rdi vbuf (advanced by vstride per coordinate), rsi mbuf
// (advanced by mstride), rdx weights (advanced per register block), rcx tile vectors, r8 vstride,
// r9 mstride. Per register block pass: rax V of tile vector j, r10 its M, r11 the weights,
// rbx the pass counter. AVX-512: zmm0..29 accumulators, zmm30 V, zmm31 zeros; AVX2: ymm0..12
// accumulators, ymm13 V, ymm14 the broadcast weight, ymm15 zeros.
class Generator : public Xbyak::CodeGenerator {
 public:
  Generator(const JitKernelView& k, int vector_width, size_t max_bytes, void* buffer)
      : Xbyak::CodeGenerator(max_bytes, buffer), k_(k), vl_(vector_width) {}

  // Emits every block; returns the offset of each block's entry, and the weights in code order.
  void Emit(std::vector<int64_t>* entries, std::vector<float>* weights,
            std::vector<int64_t>* weight_offsets) {
    using namespace Xbyak;  // NOLINT: the register names
    const bool z = vl_ == 16;
    const int64_t cpad = (k_.channels + vl_ - 1) / vl_ * vl_;
    const int64_t vbytes = vl_ * 4;
    // Biases of the base registers, so that the displacements fit in 8 bits (AVX-512 scales
    // them by the operand size: 64 for V, 4 for a broadcast weight).
    const int64_t vbias = z ? 128 * vbytes : 128;
    const int64_t wbias = z ? 128 * 4 : 128;
    const int64_t rebase = RebaseEvery(vl_) * 4;
    int64_t block = -1, coordinate = -1;
    auto end_coordinate = [&] {
      add(rdi, r8);
      add(rsi, r9);
    };
    auto end_block = [&] {
      pop(rbx);
      if (!z) vzeroupper();
      ret();
    };
    WalkKernel(k_, vl_, [&](int64_t b, int64_t p, const RegisterBlock& rb,
                            const std::vector<Entry>& entries_of_pass) {
      if (b != block) {
        if (block >= 0) {
          end_coordinate();
          end_block();
        }
        align(16);
        entries->push_back(static_cast<int64_t>(getSize()));
        weight_offsets->push_back(static_cast<int64_t>(weights->size()));
        push(rbx);
        if (z) {
          vpxord(zmm31, zmm31, zmm31);
        } else {
          vxorps(ymm15, ymm15, ymm15);
        }
        block = b;
        coordinate = p;
      } else if (p != coordinate) {
        end_coordinate();
        coordinate = p;
      }
      const int64_t nf = std::min(kJitFilterBlock, k_.filters - b * kJitFilterBlock);
      // The last register block also zeroes M of the padding filters [nf, nfpad).
      const int64_t nfpad = (nf + vl_ - 1) / vl_ * vl_;
      const bool last = rb.first + rb.count == nf;
      lea(rax, ptr[rdi + static_cast<int32_t>(vbias)]);
      mov(r10, rsi);
      mov(rbx, rcx);
      Label pass;
      L(pass);
      lea(r11, ptr[rdx + static_cast<int32_t>(wbias)]);
      int64_t woff = -wbias;  // of the next weight, from r11
      bool touched[kJitMaxRegisterFilters512] = {};
      const Reg64& vreg_base = rax;
      const Xmm& v = z ? static_cast<const Xmm&>(zmm30) : static_cast<const Xmm&>(ymm13);
      for (size_t e = 0; e < entries_of_pass.size(); ++e) {
        const Entry& en = entries_of_pass[e];
        if (e == 0 || en.channel != entries_of_pass[e - 1].channel) {
          const int32_t disp = static_cast<int32_t>(en.channel * vbytes - vbias);
          vmovaps(v, ptr[vreg_base + disp]);
        }
        if (woff + 4 > (z ? 512 : 128)) {
          add(r11, static_cast<int32_t>(rebase));
          woff -= rebase;
        }
        const int32_t wd = static_cast<int32_t>(woff);
        if (z) {
          const Zmm acc(en.filter);
          if (touched[en.filter]) {
            vfmadd231ps(acc, zmm30, ptr_b[r11 + wd]);
          } else {
            vmulps(acc, zmm30, ptr_b[r11 + wd]);
          }
        } else {
          const Ymm acc(en.filter);
          vbroadcastss(ymm14, ptr[r11 + wd]);
          if (touched[en.filter]) {
            vfmadd231ps(acc, ymm13, ymm14);
          } else {
            vmulps(acc, ymm13, ymm14);
          }
        }
        touched[en.filter] = true;
        woff += 4;
      }
      const Xmm& zeros = z ? static_cast<const Xmm&>(zmm31) : static_cast<const Xmm&>(ymm15);
      for (int64_t i = 0; i < rb.count; ++i) {
        const int32_t disp = static_cast<int32_t>((rb.first + i) * vbytes);
        if (!touched[i]) {
          vmovaps(ptr[r10 + disp], zeros);
        } else if (z) {
          vmovaps(ptr[r10 + disp], Zmm(static_cast<int>(i)));
        } else {
          vmovaps(ptr[r10 + disp], Ymm(static_cast<int>(i)));
        }
      }
      if (last) {
        for (int64_t f = nf; f < nfpad; ++f) {
          vmovaps(ptr[r10 + static_cast<int32_t>(f * vbytes)], zeros);
        }
      }
      add(rax, static_cast<int32_t>(cpad * vbytes));
      add(r10, static_cast<int32_t>(kJitFilterBlock * vbytes));
      dec(rbx);
      jnz(pass, T_NEAR);
      if (!entries_of_pass.empty()) {
        add(rdx, static_cast<int32_t>(entries_of_pass.size() * 4));
      }
      for (const Entry& en : entries_of_pass) weights->push_back(k_.values[en.index]);
    });
    if (block >= 0) {
      end_coordinate();
      end_block();
    }
  }

 private:
  const JitKernelView& k_;
  const int vl_;
};

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

std::atomic<int64_t> live_code_bytes{0};

}  // namespace

int64_t LiveJitCodeBytes() { return live_code_bytes.load(); }

JitSize EstimateJitProducts(const JitKernelView& k, int vector_width) {
  JitSize size;
  const int64_t per_weight = vector_width == 16 ? 7 : 11;
  const int64_t blocks = (k.filters + kJitFilterBlock - 1) / kJitFilterBlock;
  size.code_bytes = blocks * (kBlockBytes + k.coordinates * kCoordinateBytes);
  int64_t nnz = 0;
  WalkKernel(k, vector_width, [&](int64_t, int64_t, const RegisterBlock& rb,
                                  const std::vector<Entry>& entries) {
    int64_t loads = 0;
    for (size_t e = 0; e < entries.size(); ++e) {
      loads += e == 0 || entries[e].channel != entries[e - 1].channel;
    }
    const int64_t n = static_cast<int64_t>(entries.size());
    size.vector_loads += loads;
    size.code_bytes += kPassBytes + loads * kVectorLoadBytes + n * per_weight +
                       (n / RebaseEvery(vector_width) + 1) * kRebaseBytes +
                       (rb.count + vector_width) * kStoreBytes;
    nnz += n;
  });
  size.weight_bytes = nnz * 4;
  return size;
}

std::unique_ptr<JitProducts> JitProducts::Generate(const JitKernelView& kernel, int vector_width,
                                                   int64_t max_code_bytes, std::string* error) {
  if (vector_width != 16 && vector_width != 8) {
    *error = "generated products exist for AVX-512 (16 lanes) and AVX2 (8 lanes) only";
    return nullptr;
  }
  if (kernel.channels > kMaxJitDimension || kernel.filters > kMaxJitDimension ||
      kernel.row_ptr[kernel.coordinates * kernel.filters] > (int64_t{1} << 28)) {
    *error = "kernel too large for generated products (channels or filters above 2^24, or more "
             "than 2^28 nonzeros)";
    return nullptr;
  }
  const JitSize size = EstimateJitProducts(kernel, vector_width);
  if (size.code_bytes > max_code_bytes) {
    *error = "generated code would take " + std::to_string(size.code_bytes) +
             " bytes, above the budget of " + std::to_string(max_code_bytes);
    return nullptr;
  }
  const size_t page = PageSize();
  const size_t mapped =
      std::max<size_t>(page, (static_cast<size_t>(size.code_bytes) + page - 1) / page * page);
  void* mapping = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
  if (mapping == MAP_FAILED) {
    *error = "could not map " + std::to_string(mapped) + " bytes for generated code";
    return nullptr;
  }
  std::unique_ptr<JitProducts> jit(new JitProducts());
  jit->mapping_ = mapping;
  jit->mapped_bytes_ = mapped;
  std::vector<int64_t> entries;
  {
    Xbyak::ClearError();
    Generator gen(kernel, vector_width, mapped, mapping);
    gen.Emit(&entries, &jit->weights_, &jit->weight_offsets_);
    if (Xbyak::GetError() != 0) {
      *error = std::string("assembling the generated products failed: ") +
               Xbyak::ConvertErrorToString(Xbyak::GetError());
      Xbyak::ClearError();
      return nullptr;  // the destructor unmaps
    }
    jit->code_bytes_ = static_cast<int64_t>(gen.getSize());
  }
  // Give back the pages the bound over-reserved, then make the code executable and read-only.
  const size_t used = (static_cast<size_t>(jit->code_bytes_) + page - 1) / page * page;
  const int64_t expected_blocks = (kernel.filters + kJitFilterBlock - 1) / kJitFilterBlock;
  if (used == 0 || static_cast<int64_t>(entries.size()) != expected_blocks ||
      jit->weight_offsets_.size() != entries.size()) {
    *error = "the generated code does not have one block per " +
             std::to_string(kJitFilterBlock) + " filters";
    return nullptr;  // the destructor unmaps
  }
  if (used < mapped) {
    munmap(static_cast<char*>(mapping) + used, mapped - used);
    jit->mapped_bytes_ = used;
  }
  live_code_bytes += static_cast<int64_t>(jit->mapped_bytes_);
  if (mprotect(mapping, used, PROT_READ | PROT_EXEC) != 0) {
    *error = "could not make the generated code executable (mprotect)";
    return nullptr;
  }
  for (int64_t offset : entries) {
    jit->blocks_.push_back(reinterpret_cast<JitBlockFn>(
        reinterpret_cast<uintptr_t>(static_cast<char*>(mapping) + offset)));
  }
  jit->call_.vector_width = vector_width;
  jit->call_.filter_block = kJitFilterBlock;
  jit->call_.blocks = jit->blocks_.data();
  jit->call_.weights = jit->weights_.data();
  jit->call_.weight_offsets = jit->weight_offsets_.data();
  return jit;
}

JitProducts::~JitProducts() {
  if (mapping_ != nullptr) {
    munmap(mapping_, mapped_bytes_);
    if (code_bytes_ > 0) live_code_bytes -= static_cast<int64_t>(mapped_bytes_);
  }
}

}  // namespace tfsw
