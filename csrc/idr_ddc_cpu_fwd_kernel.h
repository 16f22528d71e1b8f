// CPU forward of IDR-DDC for a range of work units (unit = one row band of one plane).
//
// Included once per instruction set by idr_ddc_cpu_fwd.cpp (see idr_ddc_cpu.h). For every output row the K
// input rows it needs sit in a rolling buffer of zero-padded rows (each input row is converted to the
// accumulation type once, when it enters the buffer); all K*K taps are applied to a vector of outputs held in
// registers, the LeakyReLU is applied, and the vector is stored once. No branches on the image border.

template <typename T, int K>
static void forward_units(const IdrDdcParams& p, int64_t begin, int64_t end) {
  typedef typename AccOf<T>::type A;
  typedef typename VecOf<A>::type V;
  constexpr int P = K / 2;
  constexpr int64_t L = KDSR_VBYTES / sizeof(A);  // lanes per vector
  const int64_t H = p.H, W = p.W;
  const int64_t Wv = (W + L - 1) / L * L;  // columns computed: W rounded up to whole vectors
  const int64_t full = W / L * L;          // columns stored straight from registers
  RowBuffers<A> buffers(K + 1, Wv + 2 * P + L);
  A* rows[K];
  for (int r = 0; r < K; ++r) rows[r] = buffers.row(r);
  A* out_row = buffers.row(K);  // staging for the last partial vector / the half-precision conversion
  const A slope = static_cast<A>(p.negative_slope);
  const bool act = p.has_act != 0;
  const V zero = {};

  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t plane = unit / p.bands;
    const int64_t h0 = (unit % p.bands) * p.band_rows;
    const int64_t h1 = std::min<int64_t>(H, h0 + p.band_rows);
    const T* xp = static_cast<const T*>(p.x) + plane * H * W;
    T* yp = static_cast<T*>(p.y) + plane * H * W;
    const T* wp = static_cast<const T*>(p.weight) + plane * K * K;
    A w[K * K];
    for (int t = 0; t < K * K; ++t) w[t] = static_cast<A>(wp[t]);
    for (int r = 0; r < K; ++r) {
      const int64_t h = h0 - P + r;
      load_row<T, A>(rows[r] + P, (h >= 0 && h < H) ? xp + h * W : nullptr, W);
    }
    for (int64_t h = h0; h < h1; ++h) {
      T* dst = yp + h * W;
      if constexpr (std::is_same<T, A>::value) {
        A* dst_a = reinterpret_cast<A*>(dst);
        for (int64_t x0 = 0; x0 < full; x0 += L) {
          V acc = apply_taps<K, A>(rows, w, x0);
          if (act) acc = acc > zero ? acc : acc * slope;
          vstore(dst_a + x0, acc);
        }
        if (full < W) {
          V acc = apply_taps<K, A>(rows, w, full);
          if (act) acc = acc > zero ? acc : acc * slope;
          vstore(out_row, acc);
          for (int64_t x = full; x < W; ++x) dst_a[x] = out_row[x - full];
        }
      } else {
        for (int64_t x0 = 0; x0 < Wv; x0 += L) {
          V acc = apply_taps<K, A>(rows, w, x0);
          if (act) acc = acc > zero ? acc : acc * slope;
          vstore(out_row + x0, acc);
        }
        store_row<T, A>(dst, out_row, W);
      }
      if (h + 1 < h1) {  // roll the buffer down one row
        A* recycled = rows[0];
        for (int r = 0; r + 1 < K; ++r) rows[r] = rows[r + 1];
        rows[K - 1] = recycled;
        const int64_t h_in = h + P + 1;
        load_row<T, A>(rows[K - 1] + P, h_in < H ? xp + h_in * W : nullptr, W);
      }
    }
  }
}
