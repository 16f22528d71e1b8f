// CUDA binding of IDR-DDC: the CUDA side of the glue in idr_ddc_op.h (which checks the tensors and fills
// IdrDdcParams) -- calls the plain-C launchers of idr_ddc_fwd.cu / idr_ddc_bwd.cu on the current stream of the
// tensors' device. The kernels themselves see no torch header, so they compile with nvcc alone.

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "idr_ddc_op.h"

namespace kdsr_cuda_binding {

static void check_status(int status, const char* what) {
  TORCH_CHECK(status == 0, "idr_ddc cuda: ", what, " failed: ",
              status < 0 ? "unsupported kernel size or dtype"
                         : cudaGetErrorString(static_cast<cudaError_t>(status)));
}

int64_t num_tiles(const at::Tensor& x, int64_t k);

// The CUDA side of the shared glue (idr_ddc_op.h): the launchers pick their own tiles; grad_w of a multi-tile
// plane goes through a (B*C, tiles, k*k) workspace, of a one-tile plane straight to grad_w.
struct CudaBinding {
  static constexpr const char* kName = "idr_ddc cuda";
  static constexpr const char* kDevice = "CUDA";
  static constexpr const char* kPieces = "num_tiles(x, k)";

  static bool on_device(const at::Tensor& t) { return t.is_cuda(); }

  static void set_pieces(IdrDdcParams& p) {
    p.bands = 1;
    p.band_rows = static_cast<int32_t>(std::min<int64_t>(p.H, 2147483647));
  }

  static int64_t workspace_pieces(const at::Tensor& x, int64_t K) {
    const int64_t tiles = num_tiles(x, K);
    return tiles > 1 ? tiles : 0;
  }

  static void run_forward(const IdrDdcParams& p, const at::Tensor& x) {
    const c10::cuda::CUDAGuard guard(x.device());
    check_status(idr_ddc_cuda_forward(&p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
                 "forward launch");
  }

  static void run_backward(const IdrDdcParams& p, const at::Tensor& x, const std::optional<at::Tensor>&) {
    const c10::cuda::CUDAGuard guard(x.device());
    check_status(idr_ddc_cuda_backward(&p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
                 "backward launch");
  }
};

// Tiles per plane for x's shape, dtype and layout with kernel size k: the workspace is (B*C, tiles, k*k) float64.
int64_t num_tiles(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.dim() == 4, "idr_ddc cuda: x must be 4-D");
  return idr_ddc_cuda_tiles(x.size(2), x.size(3), static_cast<int32_t>(k), kdsr_op::dtype_code<CudaBinding>(x),
                            kdsr_op::is_channels_last<CudaBinding>(x) ? 1 : 0);
}
}  // namespace kdsr_cuda_binding

// The CUDA kernels of the operators (schemas and autograd: the CPU extension).
TORCH_LIBRARY_IMPL(kdsr, CUDA, m) { kdsr_op::impl_kernels<kdsr_cuda_binding::CudaBinding>(m); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "IDR-DDC CUDA kernels (kdsr_kernels): fused forward and fused backward";
  kdsr_op::def_common<kdsr_cuda_binding::CudaBinding>(m);
  m.def("num_tiles", &kdsr_cuda_binding::num_tiles, "tiles per plane (the grad_w workspace's dim 1)");
}
