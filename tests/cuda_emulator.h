// Runs the IDR-DDC CUDA kernels (csrc/*.cu) on the CPU, for testing on machines without a GPU.
//
// Force-included (g++ -include tests/cuda_emulator.h -x c++ csrc/idr_ddc_fwd.cu ...) ahead of the kernel
// sources. Every CTA of a launch runs in turn; its threads are real std::threads, so __syncthreads() is a
// std::barrier over the CTA and __shfl_xor_sync() exchanges values through a per-warp slot array between two
// warp barriers. __shared__ variables become function-local statics in one linker section (one copy, used by
// one CTA at a time) that is filled with 0xFF bytes (NaN for every float type) before each CTA: a kernel that
// reads shared memory it never wrote sees NaN, as it would see garbage on a GPU, instead of zeros.
// This checks indexing, staging, halos, reductions and the multi-tile path -- not timing, not memory-model
// subtleties of a real GPU (e.g. a missing __syncwarp would go unnoticed).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#undef __shared__
#define __shared__ static __attribute__((section("kdsr_emu_shared")))

// Bounds of the section above, provided by the GNU linker (weak: null when a build has no __shared__ at all).
extern "C" char __start_kdsr_emu_shared[] __attribute__((weak));
extern "C" char __stop_kdsr_emu_shared[] __attribute__((weak));
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace kdsr_emu {

inline thread_local uint3 thread_idx;
inline thread_local uint3 block_idx;
inline dim3 grid_dim;
inline dim3 block_dim;

struct Warp {
  std::barrier<> barrier{32};
  double slots[32];
};

inline std::unique_ptr<std::barrier<>> cta_barrier;
inline std::vector<std::unique_ptr<Warp>> warps;

inline int linear_thread() {
  return static_cast<int>(thread_idx.x + block_dim.x * (thread_idx.y + block_dim.y * thread_idx.z));
}

// Runs kernel(args...) over the grid, one CTA at a time, each with block.x * block.y * block.z threads.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
  grid_dim = grid;
  block_dim = block;
  const int threads = static_cast<int>(block.x * block.y * block.z);
  cta_barrier = std::make_unique<std::barrier<>>(threads);
  warps.clear();
  for (int w = 0; w < (threads + 31) / 32; ++w) warps.push_back(std::make_unique<Warp>());
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        if (__start_kdsr_emu_shared != nullptr)  // shared memory starts as garbage, not zeros
          std::memset(__start_kdsr_emu_shared, 0xFF, __stop_kdsr_emu_shared - __start_kdsr_emu_shared);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([=]() {
            block_idx = make_uint3(bx, by, bz);
            thread_idx = make_uint3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            kernel(static_cast<Params>(args)...);
          });
        }
        for (auto& thread : pool) thread.join();
      }
    }
  }
}

}  // namespace kdsr_emu

#define threadIdx (kdsr_emu::thread_idx)
#define blockIdx (kdsr_emu::block_idx)
#define gridDim (kdsr_emu::grid_dim)
#define blockDim (kdsr_emu::block_dim)

inline void __syncthreads() { kdsr_emu::cta_barrier->arrive_and_wait(); }

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

template <typename T>
inline T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask) {
  const int tid = kdsr_emu::linear_thread();
  kdsr_emu::Warp& warp = *kdsr_emu::warps[tid / 32];
  const int lane = tid % 32;
  warp.slots[lane] = static_cast<double>(value);  // exact for float and double
  warp.barrier.arrive_and_wait();
  const T other = static_cast<T>(warp.slots[lane ^ lane_mask]);
  warp.barrier.arrive_and_wait();
  return other;
}

#define KDSR_LAUNCH(kernel, grid, block, stream, ...) \
  ((void)(stream), kdsr_emu::launch(kernel, grid, block, __VA_ARGS__))

// The launchers check for launch errors; there are none here.
extern "C" inline cudaError_t kdsr_emu_last_error() { return cudaSuccess; }
#define cudaGetLastError kdsr_emu_last_error
