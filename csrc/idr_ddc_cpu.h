// Shared by the CPU translation units of IDR-DDC: the kernel-table types and the per-instruction-set plumbing.
//
// The kernels (idr_ddc_cpu_{rows,fwd_kernel,bwd_kernel,nhwc_kernel}.h) are compiled three times on x86-64 with
// GCC -- baseline SSE2, AVX2+FMA and AVX-512 -- by including them in a namespace under `#pragma GCC target`
// (idr_ddc_cpu_kernels.cpp), so a portable build (no -march=native) still runs wide vectors;
// the binding (idr_ddc_cpu.cpp) picks the widest set the CPU supports at run time. Elsewhere (Clang, ARM) only
// the baseline is built, vectorised for the compiler's default target.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "idr_ddc.h"

namespace kdsr_cpu {

enum class CpuIsa : int { baseline = 0, avx2 = 1, avx512 = 2 };

// Runs work units [begin, end) of any dtype, K and layout (unit = one row band of one plane (NCHW) or of one
// sample (NHWC), see IdrDdcParams).
typedef void (*UnitsFn)(const IdrDdcParams&, int64_t, int64_t);
struct CpuKernels {
  UnitsFn forward;
  UnitsFn backward;
};

// The kernels compiled for `isa` (idr_ddc_cpu_kernels.cpp).
const CpuKernels& kernels_for(CpuIsa isa);

}  // namespace kdsr_cpu

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KDSR_X86_MULTI_ISA 1
#define KDSR_TARGET_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define KDSR_TARGET_AVX512_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c\")")
#define KDSR_TARGET_END _Pragma("GCC pop_options")
#endif
