// The machine's measured FP32 FMA peak, for the "% peak" of bench/op_speed.py (--peak_gflops):
// 12 independent chains of 512-bit (and, for comparison, 256-bit) FMAs per thread, on 1 and on
// THREADS threads at once; each thread's rate from its own CPU time (a descheduled thread does
// not count), the total from wall time.
//
//   g++ -O2 -mavx512f -mfma -pthread bench/fma_peak.cc -o /tmp/fma_peak && /tmp/fma_peak [THREADS]
//
// AMD Zen 4 issues one 512-bit FMA per cycle per core (two 256-bit FMA pipes), Intel's AVX-512
// server cores two.
#include <immintrin.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

double ThreadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

constexpr int kChains = 12;

template <class V, V (*Set1)(float), V (*Fma)(V, V, V)>
__attribute__((noinline)) float Chains(long iterations) {
  V a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = Set1(0.001f * i);
  const V m = Set1(0.999999f), b = Set1(1e-7f);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) a[i] = Fma(a[i], m, b);
  }
  float sum = 0;
  for (int i = 0; i < kChains; ++i) sum += reinterpret_cast<const float*>(&a[i])[0];
  return sum;
}

__m512 Set512(float x) { return _mm512_set1_ps(x); }
__m512 Fma512(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
__m256 Set256(float x) { return _mm256_set1_ps(x); }
__m256 Fma256(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }

// GFLOP/s of `threads` threads running FMAs of `lanes` lanes: (best per-thread rate from CPU
// time x threads, total from wall time).
template <int kLanes>
void Measure(int threads, long iterations) {
  double best_thread = 0, best_wall = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<double> cpu(threads);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&cpu, t, iterations] {
        const double s = ThreadSeconds();
        volatile float sink = kLanes == 16 ? Chains<__m512, Set512, Fma512>(iterations)
                                           : Chains<__m256, Set256, Fma256>(iterations);
        (void)sink;
        cpu[t] = ThreadSeconds() - s;
      });
    }
    for (auto& th : pool) th.join();
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double flops = 2.0 * kLanes * kChains * static_cast<double>(iterations);
    best_thread = std::max(best_thread, flops / *std::max_element(cpu.begin(), cpu.end()));
    best_wall = std::max(best_wall, threads * flops / wall);
  }
  std::printf("%d thread(s), %d-bit FMAs: %.1f GFLOP/s per thread (CPU time), %.1f GFLOP/s in "
              "all (CPU time x threads), %.1f GFLOP/s in all (wall time)\n",
              threads, kLanes * 32, best_thread / 1e9, threads * best_thread / 1e9,
              best_wall / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const long iterations = 20000000;
  Measure<16>(1, iterations);
  Measure<8>(1, iterations);
  Measure<16>(threads, iterations);
  return 0;
}
