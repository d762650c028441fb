// The ceiling of a sparse row's products on this core: per nonzero, an 8-bit column index, a
// broadcast weight and NV FMAs with 64-byte rows of a block that stays in L1 (the inner loop of
// the conv op's products and of the FC op), with all data hot. Patterns: random rows, one row,
// sequential rows (to see whether the row addresses matter). Single thread; cycles per nonzero
// at the 2.75 GHz the cores sustain (docs/performance.md, "Fraction of peak").
//
//   g++ -O3 -mavx512f -mfma -mprefer-vector-width=512 bench/products_ceiling.cc -o /tmp/pc && /tmp/pc
#include <immintrin.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>
template <int NV>
__attribute__((noinline)) void Rows(const float* xb, const uint8_t* cols, const float* vals,
                                    const int32_t* ptr, int rows, float* out) {
  for (int u = 0; u < rows; ++u) {
    __m512 a[4][NV];
    for (int c = 0; c < 4; ++c) for (int v = 0; v < NV; ++v) a[c][v] = _mm512_setzero_ps();
    int k = ptr[u];
    const int end = ptr[u + 1];
    for (; k + 4 <= end; k += 4) {
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const float* x = xb + cols[k + c] * (16 * NV);
        const __m512 w = _mm512_set1_ps(vals[k + c]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) a[c][v] = _mm512_fmadd_ps(w, _mm512_load_ps(x + 16 * v), a[c][v]);
      }
    }
    for (int v = 0; v < NV; ++v)
      _mm512_store_ps(out + (u * NV + v) * 16, _mm512_add_ps(_mm512_add_ps(a[0][v], a[1][v]), _mm512_add_ps(a[2][v], a[3][v])));
  }
}
int main() {
  const int rows = 64, per_row = 100, nnz = rows * per_row;
  std::mt19937 rng(1);
  std::vector<int32_t> ptr(rows + 1);
  for (int u = 0; u <= rows; ++u) ptr[u] = u * per_row;
  std::vector<float> vals(nnz, 0.5f);
  float* xb = (float*)aligned_alloc(64, 256 * 64 * 4 * 4);
  for (int i = 0; i < 256 * 64 * 4; ++i) xb[i] = 1.0f / (i + 1);
  float* out = (float*)aligned_alloc(64, rows * 4 * 64 * 4);
  for (const char* pattern : {"random", "one row", "sequential"}) {
    for (int nv : {1, 2, 4}) {
      // Rows of the block: 256 (8-bit indices), 128 at NV=4 so that the block stays at 32 KiB,
      // as the conv op's tile blocks do (its L1 rule).
      const int block_rows = nv == 4 ? 128 : 256;
      std::vector<uint8_t> cols(nnz);
      for (int k = 0; k < nnz; ++k)
        cols[k] = pattern[0] == 'r' ? rng() % block_rows : pattern[0] == 'o' ? 7 : k % block_rows;
      const int reps = 20000;
      auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) {
        if (nv == 1) Rows<1>(xb, cols.data(), vals.data(), ptr.data(), rows, out);
        else if (nv == 2) Rows<2>(xb, cols.data(), vals.data(), ptr.data(), rows, out);
        else Rows<4>(xb, cols.data(), vals.data(), ptr.data(), rows, out);
        asm volatile("" ::: "memory");
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double cycles = s * 2.75e9 / (double(reps) * nnz);
      std::printf("%-10s NV=%d (block %2d KiB): %.2f cycles per nonzero, %.0f%% of 2 FMAs/cycle\n",
                  pattern, nv, block_rows * 16 * nv * 4 / 1024, cycles, 100.0 * nv / (2.0 * cycles));
    }
  }
}
