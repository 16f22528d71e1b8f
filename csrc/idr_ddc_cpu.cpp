// CPU binding of IDR-DDC: the CPU side of the glue in idr_ddc_op.h (which checks the tensors and fills
// IdrDdcParams) -- runs the kernels over (plane, row band) units with at::parallel_for and picks the widest
// instruction set the CPU supports at run time -- plus the op schemas and their autograd.
//
// The kernels (idr_ddc_cpu_kernels.cpp) are compiled three times on x86-64 -- SSE2, AVX2+FMA and
// AVX-512 -- through `#pragma GCC target`, so a portable build (no -march=native) still runs wide vectors.
// KDSR_CPU_ISA=sse2|avx2|avx512 in the environment caps the choice (for tests and comparisons).

#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <cstdlib>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "idr_ddc_cpu.h"
#include "idr_ddc_dispatch.h"
#include "idr_ddc_op.h"

namespace kdsr_cpu {

// The widest instruction set this CPU runs, capped by KDSR_CPU_ISA (avx512 | avx2 | sse2) when set.
static CpuIsa select_isa() {
  const char* cap_env = std::getenv("KDSR_CPU_ISA");
  const std::string cap = cap_env ? cap_env : "";
#ifdef KDSR_X86_MULTI_ISA
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && (cap.empty() || cap == "avx512")) return CpuIsa::avx512;
  if (avx2 && (cap.empty() || cap == "avx512" || cap == "avx2")) return CpuIsa::avx2;
#endif
  return CpuIsa::baseline;
}

static CpuIsa active_isa() {
  static const CpuIsa isa = select_isa();
  return isa;
}

// Row bands per plane (NCHW) or per sample (NHWC, a band holds all C channels): a function of the shape only
// (never of the thread count), so the grad_w partial sums -- one per band -- and their fixed-order reduction
// are identical however the work is scheduled. NCHW bands hold >= 16 rows and ~16K elements (a 64x64 plane is
// one band, 180x320 four); NHWC bands >= 8 rows and ~64K elements (64x64x64: 8 bands, 180x320x64: 23), since
// a unit there covers C planes at once.
static int32_t band_rows_for(int64_t H, int64_t W, int64_t C, bool channels_last) {
  const int64_t row = channels_last ? W * C : W;
  const int64_t target = channels_last ? 65536 : 16384;
  const int64_t rows = std::max<int64_t>(channels_last ? 8 : 16, (target + row - 1) / std::max<int64_t>(row, 1));
  return static_cast<int32_t>(std::min<int64_t>(rows, H));
}

int64_t num_bands(int64_t H, int64_t W, int64_t C, bool channels_last) {
  const int64_t rows = band_rows_for(H, W, C, channels_last);
  return (H + rows - 1) / rows;
}

static void run_units(UnitsFn fn, const IdrDdcParams& p) {
  const int64_t groups = p.channels_last ? p.planes / std::max<int64_t>(p.C, 1) : p.planes;  // B or B*C
  at::parallel_for(0, groups * p.bands, 1, [&](int64_t begin, int64_t end) { fn(p, begin, end); });
}

// The CPU side of the shared glue (idr_ddc_op.h): (plane, row band) work units, grad_w reduced over the bands.
struct CpuBinding {
  static constexpr const char* kName = "idr_ddc cpu";
  static constexpr const char* kDevice = "CPU";
  static constexpr const char* kPieces = "num_bands(H, W, C, channels_last)";

  static bool on_device(const at::Tensor& t) { return t.device().is_cpu(); }

  static void set_pieces(IdrDdcParams& p) {
    TORCH_CHECK(p.H > 0 && p.W > 0, kName, ": empty planes are not supported");
    p.band_rows = band_rows_for(p.H, p.W, p.C, p.channels_last != 0);
    p.bands = static_cast<int32_t>((p.H + p.band_rows - 1) / p.band_rows);
  }

  // The kernels always write grad_w as per-band partials.
  static int64_t workspace_pieces(const at::Tensor& x, int64_t) {
    return num_bands(x.size(2), x.size(3), x.size(1), kdsr_op::is_channels_last<CpuBinding>(x));
  }

  static void run_forward(const IdrDdcParams& p, const at::Tensor&) {
    run_units(kernels_for(active_isa()).forward, p);
  }

  static void run_backward(const IdrDdcParams& p, const at::Tensor& x, const std::optional<at::Tensor>& grad_w) {
    if (p.grad_x == nullptr && p.workspace == nullptr) return;
    run_units(kernels_for(active_isa()).backward, p);
    if (p.workspace == nullptr) return;
    // grad_w[plane, t] = sum over bands, in band order.
    const int64_t taps = p.K * p.K;
    (void)x;
    kdsr_dispatch::with_dtype<c10::Half, c10::BFloat16>(p.dtype, [&](auto type) {
      using scalar_t = typename decltype(type)::type;
      scalar_t* gw = static_cast<scalar_t*>(p.grad_w);
      const double* ws = p.workspace;
      for (int64_t plane = 0; plane < p.planes; ++plane) {
        for (int64_t t = 0; t < taps; ++t) {
          double s = 0.0;
          for (int64_t b = 0; b < p.bands; ++b) s += ws[(plane * p.bands + b) * taps + t];
          gw[plane * taps + t] = static_cast<scalar_t>(s);
        }
      }
    });
  }
};

std::string isa() {
  switch (active_isa()) {
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::avx2: return "avx2";
    default:
#if defined(__x86_64__) || defined(_M_X64)
      return "sse2";
#else
      return "baseline";
#endif
  }
}

int64_t openmp_max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// ---- The torch operators kdsr::idr_ddc_compiled / kdsr::idr_ddc_compiled_backward -------------------------------
// Eager calls go dispatcher -> C++; the device kernels are kdsr_op::op_forward / op_backward (idr_ddc_op.h).

// Autograd in C++ (the forward and backward kernels are registered per device by the extensions).
class IdrDdcFunction : public torch::autograd::Function<IdrDdcFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            std::optional<double> negative_slope) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = kdsr_op::forward_op().call(x, weight, negative_slope);
    }
    ctx->saved_data["has_slope"] = negative_slope.has_value();
    ctx->saved_data["slope"] = negative_slope.value_or(0.0);
    ctx->save_for_backward({x, weight, negative_slope.has_value() ? out : at::Tensor()});
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    std::optional<double> slope;
    std::optional<at::Tensor> out;
    if (ctx->saved_data["has_slope"].toBool()) {
      slope = ctx->saved_data["slope"].toDouble();
      out = saved[2];
    }
    const bool need_grad_x = ctx->needs_input_grad(0);
    const bool need_grad_w = ctx->needs_input_grad(1);
    auto [grad_x, grad_w] = kdsr_op::backward_op().call(grads[0], saved[0], saved[1], out, slope, need_grad_x, need_grad_w);
    return {need_grad_x ? grad_x : at::Tensor(), need_grad_w ? grad_w : at::Tensor(), at::Tensor()};
  }
};

at::Tensor op_forward_autograd(const at::Tensor& x, const at::Tensor& weight, std::optional<double> negative_slope) {
  if (!at::GradMode::is_enabled() || !(x.requires_grad() || weight.requires_grad())) {
    // nothing to record: skip the autograd Function's bookkeeping, go straight to the device kernel
    at::AutoDispatchBelowADInplaceOrView guard;
    return kdsr_op::forward_op().call(x, weight, negative_slope);
  }
  return IdrDdcFunction::apply(x, weight, negative_slope);
}

// The public entry for eager Python calls: one pybind conversion, then the dispatcher (autograd, then the CPU or
// CUDA kernel) -- the same route as torch.ops.kdsr.idr_ddc_compiled without its boxed argument parsing.
at::Tensor call_idr_ddc(const at::Tensor& x, const at::Tensor& weight, std::optional<double> negative_slope) {
  return kdsr_op::forward_op().call(x, weight, negative_slope);
}
}  // namespace kdsr_cpu

// The schemas live here (the CPU extension is always loaded first); the CUDA extension adds its CUDA kernels.
TORCH_LIBRARY_FRAGMENT(kdsr, m) {
  m.def("idr_ddc_compiled(Tensor x, Tensor weight, float? negative_slope) -> Tensor");
  m.def(
      "idr_ddc_compiled_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? out, float? negative_slope, "
      "bool need_grad_x, bool need_grad_w) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kdsr, CPU, m) { kdsr_op::impl_kernels<kdsr_cpu::CpuBinding>(m); }

TORCH_LIBRARY_IMPL(kdsr, Autograd, m) { m.impl("idr_ddc_compiled", &kdsr_cpu::op_forward_autograd); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "IDR-DDC CPU kernels (kdsr_kernels): fused forward and fused backward";
  kdsr_op::def_common<kdsr_cpu::CpuBinding>(m);
  m.def("idr_ddc", &kdsr_cpu::call_idr_ddc,
        "torch.ops.kdsr.idr_ddc_compiled(x, weight, negative_slope) through the dispatcher, for eager calls",
        py::arg("x"), py::arg("weight"), py::arg("negative_slope"));
  m.def("poison_outputs", &kdsr_op::poison_outputs, "whether outputs are NaN-filled");
  m.def("num_bands", &kdsr_cpu::num_bands, "row bands per plane of (H, W, C, channels_last) (the grad_w workspace's dim 1)",
        py::arg("H"), py::arg("W"), py::arg("C"), py::arg("channels_last"));
  m.def("isa", &kdsr_cpu::isa, "instruction set the kernels run with: avx512, avx2, sse2 or baseline");
  m.def("openmp_max_threads", &kdsr_cpu::openmp_max_threads,
        "omp_get_max_threads() seen by this extension (must follow torch.set_num_threads)");
}
