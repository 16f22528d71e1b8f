// The CPU kernels of IDR-DDC (forward and fused backward, NCHW and NHWC), instantiated for every dtype, K and
// instruction set (see idr_ddc_cpu.h): the kernel headers are included once per instruction set, each time in
// its own namespace under its `#pragma GCC target`, and each namespace exports two unit runners that turn the
// run-time dtype / K / layout into template arguments (idr_ddc_dispatch.h).
#include "idr_ddc_cpu.h"
#include "idr_ddc_dispatch.h"

namespace kdsr_cpu {

// The unit runners of one instruction set; included right after its kernels.
#define KDSR_DEFINE_RUNNERS                                                                          \
  static void run_forward(const IdrDdcParams& p, int64_t begin, int64_t end) {                       \
    kdsr_dispatch::with_dtype_and_k<c10::Half, c10::BFloat16>(p.dtype, p.K, [&](auto type, auto k) { \
      using T = typename decltype(type)::type;                                                       \
      constexpr int K = decltype(k)::value;                                                          \
      if (p.channels_last) forward_units_nhwc<T, K>(p, begin, end);                                  \
      else forward_units<T, K>(p, begin, end);                                                       \
    });                                                                                              \
  }                                                                                                  \
  static void run_backward(const IdrDdcParams& p, int64_t begin, int64_t end) {                      \
    kdsr_dispatch::with_dtype_and_k<c10::Half, c10::BFloat16>(p.dtype, p.K, [&](auto type, auto k) { \
      using T = typename decltype(type)::type;                                                       \
      constexpr int K = decltype(k)::value;                                                          \
      if (p.channels_last) backward_units_nhwc<T, K>(p, begin, end);                                 \
      else backward_units<T, K>(p, begin, end);                                                      \
    });                                                                                              \
  }                                                                                                  \
  static const CpuKernels kernels = {run_forward, run_backward};

namespace baseline {
#define KDSR_VBYTES 16
#include "idr_ddc_cpu_rows.h"
#include "idr_ddc_cpu_fwd_kernel.h"
#include "idr_ddc_cpu_bwd_kernel.h"
#include "idr_ddc_cpu_nhwc_kernel.h"
KDSR_DEFINE_RUNNERS
#undef KDSR_VBYTES
}  // namespace baseline

#ifdef KDSR_X86_MULTI_ISA
KDSR_TARGET_AVX2_BEGIN
namespace avx2 {
#define KDSR_VBYTES 32
#include "idr_ddc_cpu_rows.h"
#include "idr_ddc_cpu_fwd_kernel.h"
#include "idr_ddc_cpu_bwd_kernel.h"
#include "idr_ddc_cpu_nhwc_kernel.h"
KDSR_DEFINE_RUNNERS
#undef KDSR_VBYTES
}  // namespace avx2
KDSR_TARGET_END

KDSR_TARGET_AVX512_BEGIN
namespace avx512 {
#define KDSR_VBYTES 64
#include "idr_ddc_cpu_rows.h"
#include "idr_ddc_cpu_fwd_kernel.h"
#include "idr_ddc_cpu_bwd_kernel.h"
#include "idr_ddc_cpu_nhwc_kernel.h"
KDSR_DEFINE_RUNNERS
#undef KDSR_VBYTES
}  // namespace avx512
KDSR_TARGET_END
#endif

const CpuKernels& kernels_for(CpuIsa isa) {
#ifdef KDSR_X86_MULTI_ISA
  if (isa == CpuIsa::avx512) return avx512::kernels;
  if (isa == CpuIsa::avx2) return avx2::kernels;
#endif
  (void)isa;
  return baseline::kernels;
}

}  // namespace kdsr_cpu
