// CPU forward of IDR-DDC, instantiated for every dtype, K and instruction set (see idr_ddc_cpu.h).
#include "idr_ddc_cpu.h"

namespace kdsr_cpu {

namespace baseline {
#define KDSR_VBYTES 16
#include "idr_ddc_cpu_rows.h"
#include "idr_ddc_cpu_fwd_kernel.h"
#undef KDSR_VBYTES
static const UnitsTable table = KDSR_UNITS_TABLE(forward_units);
}  // namespace baseline

#ifdef KDSR_X86_MULTI_ISA
KDSR_TARGET_AVX2_BEGIN
namespace avx2 {
#define KDSR_VBYTES 32
#include "idr_ddc_cpu_rows.h"
#include "idr_ddc_cpu_fwd_kernel.h"
#undef KDSR_VBYTES
static const UnitsTable table = KDSR_UNITS_TABLE(forward_units);
}  // namespace avx2
KDSR_TARGET_END

KDSR_TARGET_AVX512_BEGIN
namespace avx512 {
#define KDSR_VBYTES 64
#include "idr_ddc_cpu_rows.h"
#include "idr_ddc_cpu_fwd_kernel.h"
#undef KDSR_VBYTES
static const UnitsTable table = KDSR_UNITS_TABLE(forward_units);
}  // namespace avx512
KDSR_TARGET_END
#endif

const UnitsTable& forward_table(CpuIsa isa) {
#ifdef KDSR_X86_MULTI_ISA
  if (isa == CpuIsa::avx512) return avx512::table;
  if (isa == CpuIsa::avx2) return avx2::table;
#endif
  (void)isa;
  return baseline::table;
}

}  // namespace kdsr_cpu
