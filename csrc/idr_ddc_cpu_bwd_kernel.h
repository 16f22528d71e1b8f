// CPU fused backward of IDR-DDC (grad_x and grad_w in one pass) for a range of work units (unit = one row
// band of one plane).
//
// Included once per instruction set by idr_ddc_cpu_bwd.cpp (see idr_ddc_cpu.h). Two rolling buffers of K
// zero-padded rows: g = LeakyReLU'(out) * grad_out (converted and masked once, when a row enters the buffer) and
// x. Per output row: grad_x is the forward loop over g with the flipped kernel; grad_w adds g(row) * x(shifted
// rows) into K*K vector accumulators, which are folded into float64 sums every ~kFoldChunks vectors, in an
// order fixed by the shape alone. Each unit writes its K*K float64 sums to its own workspace slot, so the result
// is the same for any number of threads.

constexpr int64_t kFoldChunks = 64;  // vectors accumulated per lane before folding into float64

template <typename T, int K>
static void backward_units(const IdrDdcParams& p, int64_t begin, int64_t end) {
  typedef typename AccOf<T>::type A;
  typedef typename VecOf<A>::type V;
  constexpr int P = K / 2;
  constexpr int64_t L = KDSR_VBYTES / sizeof(A);
  const int64_t H = p.H, W = p.W;
  const int64_t Wv = (W + L - 1) / L * L;
  const int64_t full = W / L * L;
  const bool need_gx = p.grad_x != nullptr;
  const bool need_gw = p.workspace != nullptr;
  RowBuffers<A> buffers(2 * K + 1, Wv + 2 * P + L);
  A* g_rows[K];
  A* x_rows[K];
  for (int r = 0; r < K; ++r) {
    g_rows[r] = buffers.row(r);
    x_rows[r] = buffers.row(K + r);
  }
  A* out_row = buffers.row(2 * K);
  const A slope = static_cast<A>(p.negative_slope);
  const T* act_out = p.has_act ? static_cast<const T*>(p.out) : nullptr;

  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t plane = unit / p.bands;
    const int64_t h0 = (unit % p.bands) * p.band_rows;
    const int64_t h1 = std::min<int64_t>(H, h0 + p.band_rows);
    const int64_t offset = plane * H * W;
    const T* gp = static_cast<const T*>(p.grad_out) + offset;
    const T* op = act_out ? act_out + offset : nullptr;
    const T* xp = static_cast<const T*>(p.x) + offset;
    T* gxp = need_gx ? static_cast<T*>(p.grad_x) + offset : nullptr;
    const T* wp = static_cast<const T*>(p.weight) + plane * K * K;
    A w_flipped[K * K];
    for (int t = 0; t < K * K; ++t) w_flipped[t] = static_cast<A>(wp[K * K - 1 - t]);

    auto load_rows = [&](int r, int64_t h) {  // buffer row r <- image row h (zeros outside the image)
      const bool inside = h >= 0 && h < H;
      load_grad_row<T, A>(g_rows[r] + P, inside ? gp + h * W : nullptr, op ? op + h * W : nullptr, slope, W);
      if (need_gw) load_row<T, A>(x_rows[r] + P, inside ? xp + h * W : nullptr, W);
    };
    for (int r = 0; r < K; ++r) load_rows(r, h0 - P + r);

    V acc[K * K];
    double sums[K * K];
    for (int t = 0; t < K * K; ++t) {
      acc[t] = V{};
      sums[t] = 0.0;
    }
    auto fold = [&]() {
      for (int t = 0; t < K * K; ++t) {
        double s = 0.0;
        for (int64_t l = 0; l < L; ++l) s += static_cast<double>(acc[t][l]);
        sums[t] += s;
        acc[t] = V{};
      }
    };
    int64_t unfolded = 0;

    for (int64_t h = h0; h < h1; ++h) {
      if (need_gx) {
        T* dst = gxp + h * W;
        if constexpr (std::is_same<T, A>::value) {
          A* dst_a = reinterpret_cast<A*>(dst);
          for (int64_t x0 = 0; x0 < full; x0 += L) vstore(dst_a + x0, apply_taps<K, A>(g_rows, w_flipped, x0));
          if (full < W) {
            vstore(out_row, apply_taps<K, A>(g_rows, w_flipped, full));
            for (int64_t x = full; x < W; ++x) dst_a[x] = out_row[x - full];
          }
        } else {
          for (int64_t x0 = 0; x0 < Wv; x0 += L) vstore(out_row + x0, apply_taps<K, A>(g_rows, w_flipped, x0));
          store_row<T, A>(dst, out_row, W);
        }
      }
      if (need_gw) {
        const A* g_center = g_rows[P] + P;  // lanes past W read the zero tail
#pragma GCC unroll 7
        for (int i = 0; i < K; ++i) {
          V a[K];
          for (int j = 0; j < K; ++j) a[j] = acc[i * K + j];
          const A* xr = x_rows[i];
          for (int64_t x0 = 0; x0 < Wv; x0 += L) {
            const V g = vload(g_center + x0);
#pragma GCC unroll 7
            for (int j = 0; j < K; ++j) a[j] += g * vload(xr + x0 + j);
          }
          for (int j = 0; j < K; ++j) acc[i * K + j] = a[j];
        }
        unfolded += Wv / L;
        if (unfolded >= kFoldChunks) {
          fold();
          unfolded = 0;
        }
      }
      if (h + 1 < h1) {  // roll both buffers down one row
        A* g_recycled = g_rows[0];
        A* x_recycled = x_rows[0];
        for (int r = 0; r + 1 < K; ++r) {
          g_rows[r] = g_rows[r + 1];
          x_rows[r] = x_rows[r + 1];
        }
        g_rows[K - 1] = g_recycled;
        x_rows[K - 1] = x_recycled;
        load_rows(K - 1, h + P + 1);
      }
    }
    if (need_gw) {
      fold();
      double* slot = p.workspace + unit * K * K;
      for (int t = 0; t < K * K; ++t) slot[t] = sums[t];
    }
  }
}
