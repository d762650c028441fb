// A/B timing of two builds of the sparse Winograd kernel in one process, without TensorFlow.
//
// Timings on the shared machine drift by 10-30% from one minute to the next, so kernel changes
// are compared here: both builds run the same convolutions, alternated A B B A ..., and each
// keeps its best thread-CPU time. Single-threaded; the work is planned as the op plans it.
// Build and run with bench/kernel_ab.sh (see there); both builds must share ConvParams.
//
//   kernel_ab BATCH TILE DENSITY [REPS] [STAGES]
//
// STAGES: which stages run (ConvParams::stages: 7 everything; 1 input transform, 2 products,
// 4 output).
// Environment: LAYER=i runs one layer: 0-4 the five VGG-nagadomi shapes of bench/op_speed.py (the
// default runs those), 5 the first VGG-nagadomi convolution (3 -> 64 channels). BLOCK=4 prunes
// the random kernel in blocks of 4 filters (rows that share column lists). NARROW=0 gives the
// kernels 32-bit column indices only (by default they also get the 16-bit copy the op makes).
// COLD=1 evicts the caches before every timed run (otherwise the warm-up run leaves the data in
// L2/L3, where a network's fresh activations would not be). TILE_VECTORS, FILTER_BLOCK and
// UNITS_PER_THREAD set the op's tuning options (ConvOptions, the op's attributes of those names)
// for both builds; NV_A / NV_B set the tile vectors of one build. JIT=B (or A, or AB) runs that
// build with generated products (sparse_products_jit.h; A and B may be the same tree, to compare
// the CSR loop with the generated code). SHAPE=hw,c,f runs one layer of that shape instead (an
// hw x hw image, c input channels, f filters; e.g. SHAPE=7,512,512, ResNet-18's last stage).
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "sparse_products_jit.h"
#include "sparse_winograd_conv2d.h"
#include "work_plan.h"

namespace tfsw {
IsaKernel KernelA();
IsaKernel KernelB();
}  // namespace tfsw

namespace {

using tfsw::ConvParams;
using tfsw::IsaKernel;

double ThreadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// Writes 64 MiB of unrelated data: the convolution's input, weights and scratch leave L2 and
// most of L3.
void EvictCaches() {
  static std::vector<char> junk(size_t{64} << 20);
  for (size_t i = 0; i < junk.size(); i += 64) junk[i] += 1;
}

// A positive integer from this harness's environment, or `fallback`.
int64_t EnvInt(const char* name, int64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr) return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  return (end != text && value > 0) ? value : fallback;
}

float* AlignedFloats(int64_t n) {
  const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  std::memset(p, 0, bytes);  // scratch left uninitialised can hold denormals: slow FMAs
  return p;
}

struct Csr {
  std::vector<int32_t> row_ptr{0}, col_idx;
  std::vector<float> values;
};

// A random CSR kernel with a row per (coordinate, filter): every weight kept with probability
// `density`, or, with block > 1, every (coordinate, channel) of each block of `block` filters
// kept or pruned together (block-sparse rows share their column list).
Csr RandomKernel(std::mt19937& rng, int64_t coordinates, int filters, int channels,
                 double density, int block) {
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<double> uniform;
  Csr k;
  std::vector<int32_t> cols;
  for (int64_t p = 0; p < coordinates; ++p) {
    for (int f = 0; f < filters; ++f) {
      if (f % block == 0) {
        cols.clear();
        for (int c = 0; c < channels; ++c) {
          if (uniform(rng) < density) cols.push_back(c);
        }
      }
      for (int32_t c : cols) {
        k.col_idx.push_back(c);
        k.values.push_back(normal(rng));
      }
      k.row_ptr.push_back(static_cast<int32_t>(k.col_idx.size()));
    }
  }
  return k;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s BATCH TILE DENSITY [REPS] [STAGES]\n", argv[0]);
    return 2;
  }
  const int batch = std::atoi(argv[1]), tile = std::atoi(argv[2]);
  const double density = std::atof(argv[3]);
  const int reps = argc > 4 ? std::atoi(argv[4]) : 9;
  const int stages = argc > 5 ? std::atoi(argv[5]) : 7;
  const char* only = std::getenv("LAYER");
  const bool cold = EnvInt("COLD", 0) != 0;
  const int block = static_cast<int>(EnvInt("BLOCK", 1));
  const bool narrow = EnvInt("NARROW", 1) != 0;
  const char* jit_env = std::getenv("JIT");
  const std::string jit_for = jit_env == nullptr ? "" : jit_env;
  tfsw::ConvOptions options;
  options.tile_vectors = EnvInt("TILE_VECTORS", 0);
  options.filter_block = EnvInt("FILTER_BLOCK", 0);
  options.units_per_thread = EnvInt("UNITS_PER_THREAD", 0);
  if (const std::string bad = tfsw::CheckConvOptions(options); !bad.empty()) {
    std::fprintf(stderr, "%s\n", bad.c_str());
    return 2;
  }
  const IsaKernel kernels[2] = {tfsw::KernelA(), tfsw::KernelB()};
  int layers[7][3] = {{32, 64, 64}, {16, 64, 128}, {16, 128, 128}, {8, 128, 256},
                      {8, 256, 256}, {32, 3, 64}, {0, 0, 0}};
  const char* shape = std::getenv("SHAPE");
  if (shape != nullptr &&
      (std::sscanf(shape, "%d,%d,%d", &layers[6][0], &layers[6][1], &layers[6][2]) != 3 ||
       layers[6][0] <= 0 || layers[6][1] <= 0 || layers[6][2] <= 0)) {
    std::fprintf(stderr, "SHAPE must be hw,c,f (three positive integers). Received: %s\n", shape);
    return 2;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  double total[2] = {0, 0};
  const int num_layers = shape != nullptr ? 7 : 6;  // the SHAPE layer only when given
  for (int li = 0; li < num_layers; ++li) {
    if (shape != nullptr ? li != 6 : only == nullptr ? li == 5 : std::atoi(only) != li) continue;
    const int hw = layers[li][0], channels = layers[li][1], filters = layers[li][2];
    const int a = tile + 2;
    std::vector<float> input(static_cast<size_t>(batch) * hw * hw * channels);
    for (float& v : input) v = normal(rng);
    const Csr k = RandomKernel(rng, int64_t{a} * a, filters, channels, density, block);
    const int64_t rows = int64_t{a} * a * filters;
    std::vector<uint8_t> row_kind(rows);
    const std::vector<uint16_t> col_idx16(k.col_idx.begin(), k.col_idx.end());
    std::unique_ptr<tfsw::JitProducts> jit[2];
    for (int v = 0; v < 2; ++v) {
      if (jit_for.find(v == 0 ? 'A' : 'B') == std::string::npos) continue;
      tfsw::JitKernelView view;
      view.coordinates = int64_t{a} * a;
      view.filters = filters;
      view.channels = channels;
      view.row_ptr = k.row_ptr.data();
      view.col_idx16 = col_idx16.data();
      view.values = k.values.data();
      std::string error;
      const double start = ThreadSeconds();
      jit[v] = tfsw::JitProducts::Generate(view, kernels[v].vector_width, int64_t{1} << 40,
                                           &error);
      if (jit[v] == nullptr) {
        std::fprintf(stderr, "no generated code: %s\n", error.c_str());
        return 1;
      }
      std::printf("%s: generated %.2f MB of code, %.2f MB of weights in %.1f ms\n",
                  v == 0 ? "A" : "B", jit[v]->code_bytes() / 1e6, jit[v]->weight_bytes() / 1e6,
                  (ThreadSeconds() - start) * 1e3);
    }
    const int64_t out_size = int64_t{batch} * hw * hw * filters;
    float* outputs[2] = {AlignedFloats(out_size), AlignedFloats(out_size)};
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < reps; ++r) {
      for (int turn = 0; turn < 2; ++turn) {
        const int v = (r % 2 == 0) ? turn : 1 - turn;
        const IsaKernel& kernel = kernels[v];
        if (!kernel.scan_columns(k.row_ptr.data(), rows, filters, k.col_idx.data(), channels,
                                 row_kind.data())) {
          std::fprintf(stderr, "column index out of range\n");
          return 1;
        }
        ConvParams p;
        p.input = input.data();
        p.batch = batch;
        p.in_h = p.in_w = hw;
        p.in_c = channels;
        p.output = outputs[v];
        p.out_h = p.out_w = hw;
        p.filters = filters;
        p.pad_top = p.pad_left = 1;
        p.tile_size = tile;
        p.row_ptr = k.row_ptr.data();
        p.col_idx = k.col_idx.data();
        p.values = k.values.data();
        p.row_kind = row_kind.data();
        if (narrow) p.col_idx16 = col_idx16.data();
        if (jit[v] != nullptr) p.jit = &jit[v]->call();
        tfsw::ConvOptions variant_options = options;
        variant_options.tile_vectors = EnvInt(v == 0 ? "NV_A" : "NV_B", options.tile_vectors);
        tfsw::PlanWork(kernel.vector_width, 1, variant_options, &p);
        const int64_t units = p.num_blocks * p.filter_groups;
        float* scratch = AlignedFloats(kernel.scratch_floats(p));
        p.stages = 7;  // fills the scratch buffers with real data first
        kernel.run_units(p, 0, units, scratch);
        p.stages = stages;
        if (cold) EvictCaches();
        const double start = ThreadSeconds();
        kernel.run_units(p, 0, units, scratch);
        best[v] = std::min(best[v], ThreadSeconds() - start);
        std::free(scratch);
      }
    }
    double worst = 0, largest = 0;  // difference of the outputs (meaningful for STAGES 7)
    for (int64_t i = 0; i < out_size; ++i) {
      const double x = outputs[0][i], y = outputs[1][i];
      worst = std::max(worst, std::abs(x - y));
      largest = std::max(largest, std::abs(x));
    }
    std::printf("%dx%dx%d->%d  A %.3f ms  B %.3f ms  A/B %.3f  max diff / max |A| %.2g\n", hw,
                hw, channels, filters, best[0] * 1e3, best[1] * 1e3, best[0] / best[1],
                worst / std::max(largest, 1e-30));
    total[0] += best[0];
    total[1] += best[1];
    std::free(outputs[0]);
    std::free(outputs[1]);
  }
  std::printf("total  A %.2f ms  B %.2f ms  A/B %.3f (> 1: B faster)\n", total[0] * 1e3,
              total[1] * 1e3, total[0] / total[1]);
  return 0;
}
