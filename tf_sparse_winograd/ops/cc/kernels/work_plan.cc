#include "work_plan.h"

#include <algorithm>
#include <string>

namespace tfsw {

std::string CheckConvOptions(const ConvOptions& options) {
  const int64_t nv = options.tile_vectors;
  if (nv != 0 && nv != 1 && nv != 2 && nv != 4) {
    return "tile_vectors must be 0 (chosen by the op), 1, 2 or 4. Received: tile_vectors=" +
           std::to_string(nv);
  }
  if (options.filter_block < 0 || options.filter_block > kMaxFilterBlock) {
    return "filter_block must be in [0, " + std::to_string(kMaxFilterBlock) +
           "] (0: chosen by the op). Received: filter_block=" +
           std::to_string(options.filter_block);
  }
  if (options.units_per_thread < 0 || options.units_per_thread > kMaxUnitsPerThread) {
    return "units_per_thread must be in [0, " + std::to_string(kMaxUnitsPerThread) +
           "] (0: chosen by the op). Received: units_per_thread=" +
           std::to_string(options.units_per_thread);
  }
  return "";
}

bool ParseProductsPath(const std::string& name, ProductsPath* path) {
  if (name == "auto") {
    *path = ProductsPath::kAuto;
  } else if (name == "csr") {
    *path = ProductsPath::kCsr;
  } else if (name == "jit") {
    *path = ProductsPath::kJit;
  } else {
    return false;
  }
  return true;
}

void PlanWork(int vector_width, int num_threads, const ConvOptions& options, ConvParams* p) {
  p->tiles_h = CeilDiv(p->out_h, p->tile_size);
  p->tiles_w = CeilDiv(p->out_w, p->tile_size);
  p->num_tiles = p->batch * p->tiles_h * p->tiles_w;
  const int64_t vl = vector_width;
  const int64_t a = p->tile_size + 2;
  const int64_t cpad = CeilDiv(p->in_c, vl) * vl;
  int64_t nv = options.tile_vectors;
  if (nv == 0) {
    // Four vectors of tiles, fewer if one Winograd coordinate's slice of the transformed block
    // (read by the products for every filter) would not stay in L1, if the whole block would
    // not stay in L2, or if there are not enough tiles to fill them. The L1 rule measured on
    // 8x8x256->256, batch 32, tile 2, density 1.0: 22.1 ms (4 vectors) -> 15.5 ms (2).
    nv = 4;
    while (nv > 1 && cpad * nv * vl * 4 > (int64_t{32} << 10)) nv /= 2;
    while (nv > 1 && a * a * cpad * nv * vl * 4 > (int64_t{3} << 20)) nv /= 2;
    while (nv > 1 && (nv / 2) * vl >= p->num_tiles) nv /= 2;
  }
  if (p->jit != nullptr && options.tile_vectors == 0) {
    // Generated products come in blocks of jit->filter_block filters: with fewer tile blocks x
    // filter blocks than threads, split the tiles rather than leave a thread idle.
    const int64_t filter_blocks = CeilDiv(p->filters, p->jit->filter_block);
    while (nv > 1 && CeilDiv(p->num_tiles, nv * vl) * filter_blocks < num_threads) nv /= 2;
  }
  p->tile_block = nv * vl;
  p->num_blocks = CeilDiv(p->num_tiles, p->tile_block);
  // Split the filters too when there are fewer tile blocks than threads. Every filter group
  // repeats its block's input transform, so one unit per thread is the target: two per thread
  // made batch 1 (one block per layer) 15-20% slower, and at batch 32 they were on a par.
  const int64_t chunks = CeilDiv(p->filters, vl);
  const int64_t units_per_thread = options.units_per_thread > 0 ? options.units_per_thread : 1;
  int64_t groups = 1;
  while (p->num_blocks * groups < units_per_thread * num_threads && groups * 2 <= chunks) {
    groups *= 2;
  }
  p->filters_per_group = CeilDiv(chunks, groups) * vl;
  p->filter_groups = CeilDiv(p->filters, p->filters_per_group);
  const int64_t block = CeilDiv(options.filter_block > 0 ? options.filter_block : 64, vl) * vl;
  p->filter_block = block < p->filters_per_group ? block : p->filters_per_group;
  if (p->jit != nullptr) {  // groups of whole blocks of the generated code
    const int64_t fb = p->jit->filter_block;
    const int64_t filter_blocks = CeilDiv(p->filters, fb);
    int64_t jit_groups = 1;
    while (p->num_blocks * jit_groups < num_threads && jit_groups * 2 <= filter_blocks) {
      jit_groups *= 2;
    }
    p->filters_per_group = CeilDiv(filter_blocks, jit_groups) * fb;
    p->filter_groups = CeilDiv(p->filters, p->filters_per_group);
    p->filter_block = fb;
  }
}

void PlanDenseWork(int vector_width, DenseParams* p) {
  const int64_t vl = vector_width;
  p->chunk_lanes = std::min<int64_t>(CeilDiv(kDenseChunkLanes, vl), CeilDiv(p->batch, vl)) * vl;
  p->chunk_lanes = std::max<int64_t>(p->chunk_lanes, vl);
  p->num_chunks = CeilDiv(p->batch, p->chunk_lanes);
  p->unit_groups = CeilDiv(p->units, kDenseUnitGroup);
}

}  // namespace tfsw
