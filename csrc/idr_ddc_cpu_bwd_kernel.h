// CPU fused backward of IDR-DDC (grad_x and grad_w in one pass) for a range of work units (unit = one row
// band of one plane).
//
// Included once per instruction set by idr_ddc_cpu_bwd.cpp (see idr_ddc_cpu.h). Two rolling buffers of
// zero-padded rows: g = LeakyReLU'(out) * grad_out (converted and masked once, when a row enters the buffer) and
// x. Per step of kRowsPerStep output rows: grad_x is the forward loop over g with the flipped kernel; grad_w adds
// g(row) * x(shifted rows) into vector accumulators, which are summed into K*K per-lane totals and folded into
// float64 every ~kFoldChunks vectors, in an order fixed by the shape alone. Each unit writes its K*K float64 sums
// to its own workspace slot, so the result is the same for any number of threads.

constexpr int64_t kFoldChunks = 64;  // vectors accumulated per lane before folding into float64

// grad_w rows per pass over a row block (1, 2 or 4, dividing kRowsPerStep): K * RW accumulator chains plus RW
// g vectors stay in registers.
template <int K>
struct GradWRows {
  static constexpr int fit = (kVecRegs - 2) / (K + 1);
  static constexpr int value = fit >= 4 ? 4 : (fit >= 2 ? 2 : 1);
};

template <typename T, int K>
static void backward_units(const IdrDdcParams& p, int64_t begin, int64_t end) {
  typedef typename AccOf<T>::type A;
  typedef typename VecOf<A>::type V;
  constexpr int P = K / 2;
  constexpr int R = kRowsPerStep;
  constexpr int NR = R + K - 1;
  constexpr int RW = GradWRows<K>::value;
  static_assert(R % RW == 0, "grad_w row groups must tile the row step");
  constexpr int64_t L = KDSR_VBYTES / sizeof(A);
  const int64_t H = p.H, W = p.W;
  const int64_t Wv = (W + L - 1) / L * L;
  const int64_t full = W / L * L;
  const bool need_gx = p.grad_x != nullptr;
  const bool need_gw = p.workspace != nullptr;
  RowBuffers<A> buffers(2 * NR + R + 1, Wv + 2 * P + L);
  A* g_rows[NR];
  A* x_rows[NR];
  for (int r = 0; r < NR; ++r) {
    g_rows[r] = buffers.row(r);
    x_rows[r] = buffers.row(NR + r);
  }
  A* staging[R];
  for (int q = 0; q < R; ++q) staging[q] = buffers.row(2 * NR + q);
  const A* zero_row = buffers.row(2 * NR + R);  // never written: g of rows past the band
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

    auto load = [&](int r, int64_t h) {  // buffer row r <- image row h (zeros outside the image)
      const bool inside = h >= 0 && h < H;
      load_grad_row<T, A>(g_rows[r] + P, inside ? gp + h * W : nullptr, op ? op + h * W : nullptr, slope, W);
      if (need_gw) load_row<T, A>(x_rows[r] + P, inside ? xp + h * W : nullptr, W);
    };
    for (int r = 0; r < NR; ++r) load(r, h0 - P + r);

    V acc[K * K];  // per-lane grad_w partial sums
    double sums[K * K];
    for (int t = 0; t < K * K; ++t) {
      acc[t] = V{};
      sums[t] = 0.0;
    }
    int64_t unfolded = 0;

    for (int64_t h = h0; h < h1; h += R) {
      const int nq = static_cast<int>(std::min<int64_t>(R, h1 - h));
      if (need_gx) {
        for (int64_t x0 = 0; x0 < Wv; x0 += L) {
          V gx[R];
          apply_taps<K, R, A>(g_rows, w_flipped, x0, gx);
#pragma GCC unroll 8
          for (int q = 0; q < R; ++q) {
            if constexpr (std::is_same<T, A>::value) {
              if (q < nq && x0 < full) vstore(reinterpret_cast<A*>(gxp + (h + q) * W) + x0, gx[q]);
              else vstore(staging[q] + x0, gx[q]);
            } else {
              vstore(staging[q] + x0, gx[q]);
            }
          }
        }
        for (int q = 0; q < nq; ++q) {
          T* dst = gxp + (h + q) * W;
          if constexpr (std::is_same<T, A>::value) {
            for (int64_t x = full; x < W; ++x) dst[x] = staging[q][x];
          } else {
            store_row<T, A>(dst, staging[q], W);
          }
        }
      }
      if (need_gw) {
        // grad_w[i][j] += sum_q g[row q] * x[row q + i - P][col + j - P]; rows past the band count as zero.
        const A* g_center[R];
        for (int q = 0; q < R; ++q) g_center[q] = q < nq ? g_rows[q + P] + P : zero_row;
        if constexpr (K * K + R + 1 <= kVecRegs) {
          // all K*K accumulators in registers: each loaded x vector feeds every (row, tap) pair using it
          V a[K * K];
#pragma GCC unroll 49
          for (int t = 0; t < K * K; ++t) a[t] = acc[t];
          for (int64_t x0 = 0; x0 < Wv; x0 += L) {
            V g[R];
#pragma GCC unroll 4
            for (int q = 0; q < R; ++q) g[q] = vload(g_center[q] + x0);
#pragma GCC unroll 16
            for (int r = 0; r < R + K - 1; ++r) {
#pragma GCC unroll 7
              for (int j = 0; j < K; ++j) {
                const V v = vload(x_rows[r] + x0 + j);
#pragma GCC unroll 4
                for (int q = 0; q < R; ++q) {
                  const int i = r - q;
                  if (i >= 0 && i < K) a[i * K + j] += g[q] * v;
                }
              }
            }
          }
#pragma GCC unroll 49
          for (int t = 0; t < K * K; ++t) acc[t] = a[t];
        } else {
          // one kernel row i at a time: K * RW accumulator chains
#pragma GCC unroll 7
          for (int i = 0; i < K; ++i) {
#pragma GCC unroll 4
            for (int q0 = 0; q0 < R; q0 += RW) {
              V a[K][RW];
              for (int j = 0; j < K; ++j)
                for (int q = 0; q < RW; ++q) a[j][q] = V{};
              for (int64_t x0 = 0; x0 < Wv; x0 += L) {
                V g[RW];
#pragma GCC unroll 4
                for (int q = 0; q < RW; ++q) g[q] = vload(g_center[q0 + q] + x0);
#pragma GCC unroll 7
                for (int j = 0; j < K; ++j) {
#pragma GCC unroll 4
                  for (int q = 0; q < RW; ++q) a[j][q] += g[q] * vload(x_rows[q0 + q + i] + x0 + j);
                }
              }
#pragma GCC unroll 7
              for (int j = 0; j < K; ++j) {
                V sum = a[j][0];
#pragma GCC unroll 4
                for (int q = 1; q < RW; ++q) sum += a[j][q];
                acc[i * K + j] += sum;
              }
            }
          }
        }
        unfolded += (Wv / L) * R;
        if (unfolded >= kFoldChunks) {
          for (int t = 0; t < K * K; ++t) {
            double s = 0.0;
            for (int64_t l = 0; l < L; ++l) s += static_cast<double>(acc[t][l]);
            sums[t] += s;
            acc[t] = V{};
          }
          unfolded = 0;
        }
      }
      if (h + R < h1) {  // advance both rolling buffers by R rows
        rotate_rows<A>(g_rows, NR, R);
        rotate_rows<A>(x_rows, NR, R);
        for (int r = NR - R; r < NR; ++r) load(r, h + R - P + r);
      }
    }
    if (need_gw) {
      double* slot = p.workspace + unit * K * K;
      for (int t = 0; t < K * K; ++t) {
        double s = 0.0;
        for (int64_t l = 0; l < L; ++l) s += static_cast<double>(acc[t][l]);
        slot[t] = sums[t] + s;
      }
    }
  }
}
