/* Type-generic part of _native.c, included once with T = float (SUF(f) = f_f32, JT_F32 1)
 * and once with T = double. See _native.c for what the kernels compute. */

#if JT_F32
#define EXP expf
#define FABS fabsf
#else
#define EXP exp
#define FABS fabs
#endif

/* Pair invariants |x_i - x_j|^2 and <x_i, x_j> of every ordered pair (i, j) of every jet
 * (diagonal included), jet by jet at base[jet] + a * n + b, two values per pair. */
void SUF(jt_pair_invariants)(long n_jets, const int64_t* ptr, const int64_t* base,
                             const T* x, T* out) {
  for (long jet = 0; jet < n_jets; ++jet) {
    long s = ptr[jet], n = ptr[jet + 1] - s;
    T* o = out + 2 * base[jet];
    for (long a = 0; a < n; ++a) {
      const T* xi = x + 4 * (s + a);
      for (long b = 0; b < n; ++b) {
        const T* xj = x + 4 * (s + b);
        T d0 = xi[0] - xj[0], d1 = xi[1] - xj[1], d2 = xi[2] - xj[2], d3 = xi[3] - xj[3];
        o[2 * (a * n + b)] = d0 * d0 - d1 * d1 - d2 * d2 - d3 * d3;
        o[2 * (a * n + b) + 1] = xi[0] * xj[0] - xi[1] * xj[1] - xi[2] * xj[2] - xi[3] * xj[3];
      }
    }
  }
}

/* psi(v) = sgn(v) log(1 + |v|) of the two invariants of the pair (a, b) in float64, and
 * the pair's four-vectors. */
static inline void SUF(pair_psi)(const T* xa, const T* xb, double* diff, double* inv,
                                 double* psi) {
  double dot = 0, norm = 0;
  for (int k = 0; k < 4; ++k) {
    double sign = k ? -1.0 : 1.0;
    diff[k] = (double)xa[k] - (double)xb[k];
    norm += sign * diff[k] * diff[k];
    dot += sign * (double)xa[k] * (double)xb[k];
  }
  inv[0] = norm;
  inv[1] = dot;
  for (int k = 0; k < 2; ++k) psi[k] = copysign(log1p(fabs(inv[k])), inv[k]);
}

/* Moments of psi over the ordered pairs i != j of every jet, in float64 (the inputs of
 * the pair BatchNorm's statistics): rows (P, 2) = sum over j of psi_ij (= sum over j of
 * psi_ji: psi is symmetric), total (2) and gram (2, 2) = sums of psi_ij and psi_ij psi_ij^T.
 * Each unordered pair is computed once. */
void SUF(jt_psi_moments)(long n_jets, const int64_t* ptr, const T* x, double* rows,
                         double* total, double* gram) {
  double t0 = 0, t1 = 0, g00 = 0, g01 = 0, g11 = 0;
  for (long jet = 0; jet < n_jets; ++jet) {
    long s = ptr[jet], e = ptr[jet + 1];
    for (long a = s; a < e; ++a) {
      rows[2 * a] = 0;
      rows[2 * a + 1] = 0;
    }
    for (long a = s; a < e; ++a)
      for (long b = a + 1; b < e; ++b) {
        double diff[4], inv[2], psi[2];
        SUF(pair_psi)(x + 4 * a, x + 4 * b, diff, inv, psi);
        rows[2 * a] += psi[0];
        rows[2 * a + 1] += psi[1];
        rows[2 * b] += psi[0];
        rows[2 * b + 1] += psi[1];
        t0 += psi[0];
        t1 += psi[1];
        g00 += psi[0] * psi[0];
        g01 += psi[0] * psi[1];
        g11 += psi[1] * psi[1];
      }
  }
  total[0] = 2 * t0;
  total[1] = 2 * t1;
  gram[0] = 2 * g00;
  gram[1] = gram[2] = 2 * g01;
  gram[3] = 2 * g11;
}

/* d_x (P, 4, float64, added to) of sum(g_rows * rows) + g_total . total + sum(g_gram * gram) (see above). */
void SUF(jt_psi_moments_backward)(long n_jets, const int64_t* ptr, const T* x,
                                  const double* g_rows, const double* g_total,
                                  const double* g_gram, double* d_x) {
  /* per ordered pair: d psi = g_rows[i] + g_total + (G + G^T) psi; both orders at once */
  double s00 = 2 * g_gram[0], s01 = g_gram[1] + g_gram[2], s11 = 2 * g_gram[3];
  for (long jet = 0; jet < n_jets; ++jet) {
    long s = ptr[jet], e = ptr[jet + 1];
    for (long a = s; a < e; ++a)
      for (long b = a + 1; b < e; ++b) {
        double diff[4], inv[2], psi[2], d_psi[2], d_inv[2];
        SUF(pair_psi)(x + 4 * a, x + 4 * b, diff, inv, psi);
        d_psi[0] = g_rows[2 * a] + g_rows[2 * b] + 2 * g_total[0]
                   + 2 * (s00 * psi[0] + s01 * psi[1]);
        d_psi[1] = g_rows[2 * a + 1] + g_rows[2 * b + 1] + 2 * g_total[1]
                   + 2 * (s01 * psi[0] + s11 * psi[1]);
        /* psi'(v) = 1 / (1 + |v|), 0 at v = 0 (as autograd of sgn(v) log(1 + |v|)) */
        for (int k = 0; k < 2; ++k)
          d_inv[k] = inv[k] != 0 ? d_psi[k] / (1 + fabs(inv[k])) : 0;
        for (int k = 0; k < 4; ++k) {
          double sign = k ? -1.0 : 1.0;
          double dd = 2 * d_inv[0] * sign * diff[k];
          d_x[4 * a + k] += dd + d_inv[1] * sign * (double)x[4 * b + k];
          d_x[4 * b + k] += -dd + d_inv[1] * sign * (double)x[4 * a + k];
        }
      }
  }
}

/* out (R, N) = act(init + A B): A(r, k) = A[r * rs + k * ks], B (K, N) row-major, init =
 * out (acc), the bias row or 0, act = relu or the identity. */
static void SUF(gemm)(long R, long K, long N, const T* A, long rs, long ks, const T* B,
                      const T* bias, int acc, int relu, T* out) {
#if JT_F32 && JT_AVX2
  if (N % 8 == 0) {
    gemm_avx2(R, K, N, A, rs, ks, B, bias, acc, relu, out);
    return;
  }
#endif
  for (long r = 0; r < R; ++r) {
    T* o = out + r * N;
    if (!acc)
      for (long n = 0; n < N; ++n) o[n] = bias ? bias[n] : (T)0;
    for (long k = 0; k < K; ++k) {
      T av = A[r * rs + k * ks];
      const T* b = B + k * N;
      for (long n = 0; n < N; ++n) o[n] += av * b[n];
    }
    if (relu)
      for (long n = 0; n < N; ++n) o[n] = o[n] > 0 ? o[n] : (T)0;
  }
}

static inline T SUF(dot)(const T* a, const T* b, long n) {
#if JT_F32 && JT_AVX2
  return dot_avx2(a, b, n);
#else
  T sum = 0;
  for (long c = 0; c < n; ++c) sum += a[c] * b[c];
  return sum;
#endif
}

/* relu(g q + bias) . w */
static inline T SUF(relu_dot)(const T* q, T g, const T* bias, const T* w, long n) {
#if JT_F32 && JT_AVX2
  return relu_dot_avx2(q, g, bias, w, n);
#else
  T sum = 0;
  for (long c = 0; c < n; ++c) {
    T v = q[c] * g + bias[c];
    sum += (v > 0 ? v : (T)0) * w[c];
  }
  return sum;
#endif
}

typedef struct {
  long p0, p1, n_jets, hidden, longest, num;
  const int64_t *ptr, *base;
  const T *hu, *hv, *x, *inv, *psi, *w_psi, *we, *we_t, *b_e, *w_m, *wx1, *wx1_t, *b_x1,
      *w_x2, *g_m, *g_x;
  T b_m, clamp;
  T *msum, *xs;                                              /* forward outputs */
  T *saved_m, *saved_p; /* per pair row (at its invariants' offset): m and m W_x1^T, or NULL */
  T *d_hu, *d_hv, *d_x, *d_wpsi, *d_we, *d_be, *d_wm, *d_bm, *d_wx1, *d_bx1, *d_wx2;
  int status;
} SUF(args);

/* z rows (relu'd first layer) of particle i = s + ii of a jet of n at psi row ps. */
static inline void SUF(first_layer)(const SUF(args) * a, long s, long n, long ii,
                                    const T* ps, T* z) {
  long H = a->hidden;
  const T *hui = a->hu + (s + ii) * H, *w0 = a->w_psi, *w1 = a->w_psi + H;
  for (long jj = 0, r = 0; jj < n; ++jj) {
    if (jj == ii) continue;
    const T* hvj = a->hv + (s + jj) * H;
    T pn = ps[2 * jj], pd = ps[2 * jj + 1];
    T* zr = z + r * H;
#pragma omp simd
    for (long c = 0; c < H; ++c) {
      T v = hui[c] + hvj[c] + pn * w0[c] + pd * w1[c];
      zr[c] = v > 0 ? v : (T)0;
    }
    ++r;
  }
}

static void* SUF(forward_range)(void* vp) {
  SUF(args)* a = (SUF(args)*)vp;
  long H = a->hidden, rows_max = a->longest > 1 ? a->longest - 1 : 1;
  T* z = (T*)malloc(sizeof(T) * (size_t)(rows_max * (2 * H + 1)));
  if (!z) {
    a->status = 1;
    return NULL;
  }
  T* m = z + rows_max * H;
  T* g = m + rows_max * H;
  T* q = z; /* z is not needed once m is computed */
  long jet = 0;
  while (jet < a->n_jets && a->ptr[jet + 1] <= a->p0) ++jet;
  for (long i = a->p0; i < a->p1; ++i) {
    while (a->ptr[jet + 1] <= i) ++jet;
    long s = a->ptr[jet], n = a->ptr[jet + 1] - s, ii = i - s, rows = n - 1;
    T* ms = a->msum + i * H;
    for (long c = 0; c < H; ++c) ms[c] = 0;
    if (rows <= 0) {
      if (a->wx1_t)
        for (int k = 0; k < 4; ++k) a->xs[4 * i + k] = 0;
      continue;
    }
    long pair0 = a->base[jet] + ii * n;
    T* mi = a->saved_m ? a->saved_m + pair0 * H : m;
    T* qi = a->saved_p ? a->saved_p + pair0 * H : q;
    SUF(first_layer)(a, s, n, ii, a->psi + 2 * pair0, z);
    SUF(gemm)(rows, H, H, z, H, 1, a->we_t, a->b_e, 0, 1, mi);
    for (long r = 0; r < rows; ++r) {
      const T* mr = mi + r * H;
      T gate = (T)1 / ((T)1 + EXP(-(SUF(dot)(mr, a->w_m, H) + a->b_m)));
      g[r] = gate;
#pragma omp simd
      for (long c = 0; c < H; ++c) ms[c] += gate * mr[c];
    }
    if (!a->wx1_t) continue;
    SUF(gemm)(rows, H, H, mi, H, 1, a->wx1_t, NULL, 0, 0, qi);
    const T* xi = a->x + 4 * i;
    T acc[4] = {0, 0, 0, 0};
    for (long jj = 0, r = 0; jj < n; ++jj) {
      if (jj == ii) continue;
      T t = SUF(relu_dot)(qi + r * H, g[r], a->b_x1, a->w_x2, H);
      const T* xj = a->x + 4 * (s + jj);
      for (int k = 0; k < 4; ++k) {
        T shift = (xi[k] - xj[k]) * t;
        acc[k] += shift > a->clamp ? a->clamp : (shift < -a->clamp ? -a->clamp : shift);
      }
      ++r;
    }
    for (int k = 0; k < 4; ++k) a->xs[4 * i + k] = acc[k] / (T)rows;
  }
  free(z);
  return NULL;
}

/* Gradients for the particles [p0, p1) (forward recomputed): d_hu of those particles,
 * and this thread's parts of d_hv, d_x and the weight gradients (added to a's buffers). */
static void* SUF(backward_range)(void* vp) {
  SUF(args)* a = (SUF(args)*)vp;
  long H = a->hidden, rows_max = a->longest > 1 ? a->longest - 1 : 1;
  T* z = (T*)malloc(sizeof(T) * (size_t)(rows_max * (4 * H + 6)));
  if (!z) {
    a->status = 1;
    return NULL;
  }
  T* m = z + rows_max * H;
  T* p = m + rows_max * H;   /* phi_x's product m W_x1^T, later d_z */
  T* dm = p + rows_max * H;  /* d_p, then d_m and d_a (before m's relu) */
  T* g = dm + rows_max * H;
  T* dg = g + rows_max;
  T* ddiff = dg + rows_max; /* (rows, 4) */
  int phi_x = a->wx1 != NULL;
  const T *w0 = a->w_psi, *w1 = a->w_psi + H;
  static const T metric[4] = {1, -1, -1, -1};
  long jet = 0;
  while (jet < a->n_jets && a->ptr[jet + 1] <= a->p0) ++jet;
  for (long i = a->p0; i < a->p1; ++i) {
    while (a->ptr[jet + 1] <= i) ++jet;
    long s = a->ptr[jet], n = a->ptr[jet + 1] - s, ii = i - s, rows = n - 1;
    if (rows <= 0) continue;
    long pair0 = a->base[jet] + ii * n;
    const T *ps = a->psi + 2 * pair0, *inv = a->inv + 2 * pair0;
    const T *gm = a->g_m + i * H, *xi = a->x + 4 * i;
    SUF(first_layer)(a, s, n, ii, ps, z);
    /* m and phi_x's product p as saved by the forward pass, or recomputed */
    const T* mi = m;
    if (a->saved_m)
      mi = a->saved_m + pair0 * H;
    else
      SUF(gemm)(rows, H, H, z, H, 1, a->we_t, a->b_e, 0, 1, m);
    for (long r = 0; r < rows; ++r) {
      const T* mr = mi + r * H;
      g[r] = (T)1 / ((T)1 + EXP(-(SUF(dot)(mr, a->w_m, H) + a->b_m)));
      dg[r] = SUF(dot)(mr, gm, H); /* from msum_i = sum_r g_r m_r */
    }
    if (phi_x) {
      const T* gx = a->g_x + 4 * i;
      const T* pi = p;
      if (a->saved_p)
        pi = a->saved_p + pair0 * H;
      else
        SUF(gemm)(rows, H, H, mi, H, 1, a->wx1_t, NULL, 0, 0, p);
      for (long jj = 0, r = 0; jj < n; ++jj) {
        if (jj == ii) continue;
        const T* xj = a->x + 4 * (s + jj);
        const T *pr = pi + r * H, gate = g[r];
        T t = SUF(relu_dot)(pr, gate, a->b_x1, a->w_x2, H), d_t = 0;
        for (int k = 0; k < 4; ++k) {
          T diff = xi[k] - xj[k], raw = diff * t;
          T d_raw = FABS(raw) <= a->clamp ? gx[k] / (T)rows : (T)0;
          d_t += d_raw * diff;
          ddiff[4 * r + k] = d_raw * t;
        }
        T* restrict dpr = dm + r * H;
        T* restrict d_wx2 = a->d_wx2;
        T* restrict d_bx1 = a->d_bx1;
        const T* restrict b_x1 = a->b_x1;
        const T* restrict w_x2 = a->w_x2;
        T d_gate = 0;
#pragma omp simd reduction(+ : d_gate)
        for (long c = 0; c < H; ++c) {
          T v = gate * pr[c] + b_x1[c];
          T dq = v > 0 ? d_t * w_x2[c] : (T)0;
          d_wx2[c] += d_t * (v > 0 ? v : (T)0);
          d_bx1[c] += dq;
          d_gate += dq * pr[c];
          dpr[c] = gate * dq;
        }
        dg[r] += d_gate;
        ++r;
      }
      /* d_W_x1 += d_p^T m;  d_m = d_p W_x1 into p (scratch: its recomputed values, if
       * any, are used up) */
      SUF(gemm)(H, rows, H, dm, 1, H, mi, NULL, 1, 0, a->d_wx1);
      SUF(gemm)(rows, H, H, dm, H, 1, a->wx1, NULL, 0, 0, p);
    }
    /* p holds d_m from phi_x (or nothing); d_a = (d_m + g gm + d_s w_m) where m > 0 */
    for (long r = 0; r < rows; ++r) {
      const T* mr = mi + r * H;
      T gate = g[r], d_s = dg[r] * gate * ((T)1 - gate);
      *a->d_bm += d_s;
      T* restrict dar = dm + r * H;
      const T* restrict dpm = p + r * H;
      T* restrict d_wm = a->d_wm;
      T* restrict d_be = a->d_be;
      const T* restrict w_m = a->w_m;
#pragma omp simd
      for (long c = 0; c < H; ++c) {
        /* without phi_x, p holds no d_m (uninitialised memory: not even multiplied by 0) */
        T d_m = (phi_x ? dpm[c] : (T)0) + gate * gm[c] + d_s * w_m[c];
        d_wm[c] += d_s * mr[c];
        T d_a = mr[c] > 0 ? d_m : (T)0;
        dar[c] = d_a;
        d_be[c] += d_a;
      }
    }
    /* d_W_e += d_a^T z;  d_z = d_a W_e where z > 0 */
    SUF(gemm)(H, rows, H, dm, 1, H, z, NULL, 1, 0, a->d_we);
    SUF(gemm)(rows, H, H, dm, H, 1, a->we, NULL, 0, 0, p);
    T* restrict dhu = a->d_hu + i * H;
    T dxi[4] = {0, 0, 0, 0};
    for (long jj = 0, r = 0; jj < n; ++jj) {
      if (jj == ii) continue;
      const T* restrict dz = p + r * H;
      const T* restrict zr = z + r * H;
      T* restrict dhv = a->d_hv + (s + jj) * H;
      T* restrict dw0 = a->d_wpsi;
      T* restrict dw1 = a->d_wpsi + H;
      T pn = ps[2 * jj], pd = ps[2 * jj + 1], d_pn = 0, d_pd = 0;
#pragma omp simd reduction(+ : d_pn, d_pd)
      for (long c = 0; c < H; ++c) {
        T d = zr[c] > 0 ? dz[c] : (T)0;
        dhu[c] += d;
        dhv[c] += d;
        dw0[c] += d * pn;
        dw1[c] += d * pd;
        d_pn += d * w0[c];
        d_pd += d * w1[c];
      }
      /* psi'(v) = 1 / (1 + |v|), 0 at v = 0 (as autograd of sgn(v) log(1 + |v|)) */
      T vn = inv[2 * jj], vd = inv[2 * jj + 1];
      T d_norm = vn != 0 ? d_pn / ((T)1 + FABS(vn)) : (T)0;
      T d_dot = vd != 0 ? d_pd / ((T)1 + FABS(vd)) : (T)0;
      const T* xj = a->x + 4 * (s + jj);
      T* dxj = a->d_x + 4 * (s + jj);
      for (int k = 0; k < 4; ++k) {
        T diff = xi[k] - xj[k];
        T d_diff = (phi_x ? ddiff[4 * r + k] : (T)0) + 2 * d_norm * metric[k] * diff;
        dxi[k] += d_diff + d_dot * metric[k] * xj[k];
        dxj[k] += -d_diff + d_dot * metric[k] * xi[k];
      }
      ++r;
    }
    for (int k = 0; k < 4; ++k) a->d_x[4 * i + k] += dxi[k];
  }
  free(z);
  return NULL;
}

static void SUF(fill_args)(SUF(args) * args, int n_threads, const int64_t* bounds,
                           SUF(args) proto) {
  for (int t = 0; t < n_threads; ++t) {
    args[t] = proto;
    args[t].p0 = bounds[t];
    args[t].p1 = bounds[t + 1];
  }
}

int SUF(jt_lorentz_forward)(long n_jets, const int64_t* ptr, const int64_t* base, long hidden,
                            long longest, const T* hu, const T* hv, const T* x, const T* psi,
                            const T* w_psi, const T* we_t, const T* b_e, const T* w_m, T b_m,
                            const T* wx1_t, const T* b_x1, const T* w_x2, T clamp, T* msum,
                            T* xs, T* saved_m, T* saved_p, const int64_t* bounds,
                            int n_threads) {
  SUF(args) args[64];
  SUF(args) proto;
  memset(&proto, 0, sizeof(proto));
  if (n_threads < 1) n_threads = 1;
  if (n_threads > 64) n_threads = 64;
  proto.n_jets = n_jets; proto.ptr = ptr; proto.base = base; proto.hidden = hidden;
  proto.longest = longest; proto.hu = hu; proto.hv = hv; proto.x = x; proto.psi = psi;
  proto.w_psi = w_psi; proto.we_t = we_t; proto.b_e = b_e; proto.w_m = w_m; proto.b_m = b_m;
  proto.wx1_t = wx1_t; proto.b_x1 = b_x1; proto.w_x2 = w_x2; proto.clamp = clamp;
  proto.msum = msum; proto.xs = xs; proto.saved_m = saved_m; proto.saved_p = saved_p;
  SUF(fill_args)(args, n_threads, bounds, proto);
  run_ranges(SUF(forward_range), args, sizeof(SUF(args)), n_threads);
  int status = 0;
  for (int t = 0; t < n_threads; ++t) status |= args[t].status;
  return status;
}

/* Gradients w.r.t. hu, hv, x and the weights, written into the given zero-filled buffers
 * (d_wx1, d_bx1, d_wx2 ignored without phi_x, i.e. wx1 NULL). */
int SUF(jt_lorentz_backward)(long n_jets, const int64_t* ptr, const int64_t* base, long num,
                             long hidden, long longest, const T* hu, const T* hv, const T* x,
                             const T* inv, const T* psi, const T* w_psi, const T* we,
                             const T* we_t, const T* b_e, const T* w_m, T b_m, const T* wx1,
                             const T* wx1_t, const T* b_x1, const T* w_x2, T clamp,
                             const T* g_m, const T* g_x, T* d_hu, T* d_hv, T* d_x, T* d_wpsi,
                             T* d_we, T* d_be, T* d_wm, T* d_bm, T* d_wx1, T* d_bx1,
                             T* d_wx2, T* saved_m, T* saved_p, const int64_t* bounds,
                             int n_threads) {
  SUF(args) args[64];
  SUF(args) proto;
  long H = hidden;
  memset(&proto, 0, sizeof(proto));
  if (n_threads < 1) n_threads = 1;
  if (n_threads > 64) n_threads = 64;
  proto.n_jets = n_jets; proto.ptr = ptr; proto.base = base; proto.num = num;
  proto.hidden = hidden; proto.longest = longest; proto.hu = hu; proto.hv = hv; proto.x = x;
  proto.inv = inv; proto.psi = psi; proto.w_psi = w_psi; proto.we = we; proto.we_t = we_t;
  proto.b_e = b_e; proto.w_m = w_m; proto.b_m = b_m; proto.wx1 = wx1; proto.wx1_t = wx1_t;
  proto.b_x1 = b_x1; proto.w_x2 = w_x2; proto.clamp = clamp; proto.g_m = g_m;
  proto.g_x = g_x; proto.d_hu = d_hu; proto.saved_m = saved_m; proto.saved_p = saved_p;
  SUF(fill_args)(args, n_threads, bounds, proto);
  /* Thread 0 adds into the outputs, the others into their own zeroed buffers. */
  long sizes[10] = {num * H, num * 4, 2 * H, H * H, H, H, 1, H * H, H, H};
  T* outs[10] = {d_hv, d_x, d_wpsi, d_we, d_be, d_wm, d_bm, d_wx1, d_bx1, d_wx2};
  long per_thread = 0;
  for (int k = 0; k < 10; ++k) per_thread += sizes[k];
  T* extra = NULL;
  if (n_threads > 1) {
    extra = (T*)calloc((size_t)per_thread * (size_t)(n_threads - 1), sizeof(T));
    if (!extra) return 1;
  }
  for (int t = 0; t < n_threads; ++t) {
    T* bufs[10];
    T* cursor = t ? extra + (size_t)per_thread * (size_t)(t - 1) : NULL;
    for (int k = 0; k < 10; ++k) {
      bufs[k] = t ? cursor : outs[k];
      if (t) cursor += sizes[k];
    }
    args[t].d_hv = bufs[0]; args[t].d_x = bufs[1]; args[t].d_wpsi = bufs[2];
    args[t].d_we = bufs[3]; args[t].d_be = bufs[4]; args[t].d_wm = bufs[5];
    args[t].d_bm = bufs[6]; args[t].d_wx1 = bufs[7]; args[t].d_bx1 = bufs[8];
    args[t].d_wx2 = bufs[9];
  }
  run_ranges(SUF(backward_range), args, sizeof(SUF(args)), n_threads);
  int status = 0;
  for (int t = 0; t < n_threads; ++t) status |= args[t].status;
  for (int t = 1; t < n_threads; ++t) {
    const T* cursor = extra + (size_t)per_thread * (size_t)(t - 1);
    for (int k = 0; k < 10; ++k) {
      for (long e = 0; e < sizes[k]; ++e) outs[k][e] += cursor[e];
      cursor += sizes[k];
    }
  }
  free(extra);
  return status;
}

/* k nearest neighbours of the particles of one jet (first particle s, n particles), as
 * jettag.ops.reference.knn: d_ab = max(|x_a|^2 + |x_b|^2 - 2 x_a . x_b, 0) (the Gram
 * matrix x x^T by the matrix product below, from the transposed coordinates xt), the k
 * smallest finite d_ab, b != a unless include_self, nearest first, ties to the lower b (a
 * stable sort's order); empty slots: index a and valid 0. Scratch: xt (D x n8), sq (n8),
 * gram (n x n8), best (k). */
static void SUF(knn_jet)(long s, long n, long D, const T* x, long k, int include_self,
                         T* xt, T* sq, T* gram, T* best, int64_t* index, uint8_t* valid) {
  long n8 = (n + 7) & ~7L;
  const T* xs = x + s * D;
  for (long d = 0; d < D; ++d) {
    T* row = xt + d * n8;
    for (long b = 0; b < n; ++b) row[b] = xs[b * D + d];
    for (long b = n; b < n8; ++b) row[b] = 0;
  }
  for (long b = 0; b < n; ++b) {
    T v = 0;
    for (long d = 0; d < D; ++d) v += xs[b * D + d] * xs[b * D + d];
    sq[b] = v;
  }
  SUF(gemm)(n, D, n8, xs, D, 1, xt, NULL, 0, 0, gram);
  for (long a = 0; a < n; ++a) {
    T* dist = gram + a * n8;
    int64_t* idx = index + (s + a) * k;
    uint8_t* ok = valid + (s + a) * k;
    const T sa = sq[a];
    for (long b = 0; b < n; ++b) {
      T v = (sa + sq[b]) - 2 * dist[b];
      dist[b] = v < 0 ? (T)0 : v; /* (NaN stays NaN) */
    }
    if (!include_self) dist[a] = (T)INFINITY;
    long m = 0; /* neighbours kept so far, in best / idx, sorted */
    T worst = (T)INFINITY;
    for (long b = 0; b < n; ++b) {
      const T v = dist[b];
      if (!(v < worst)) continue; /* not better than the k-th; inf and NaN never enter */
      long p = m < k ? m : k - 1;
      while (p > 0 && best[p - 1] > v) { /* strictly: equal distances keep their order */
        best[p] = best[p - 1];
        idx[p] = idx[p - 1];
        --p;
      }
      best[p] = v;
      idx[p] = s + b;
      if (m < k) ++m;
      if (m == k) worst = best[k - 1];
    }
    for (long q = 0; q < m; ++q) ok[q] = 1;
    for (long q = m; q < k; ++q) {
      idx[q] = s + a;
      ok[q] = 0;
    }
  }
}

/* kNN within every jet (see knn_jet). Jets go to up to max_threads OpenMP threads, one
 * unless there are at least min_work distance terms (sum over jets of n^2 D). Returns 1
 * if a thread could not allocate its scratch. */
int SUF(jt_knn)(long n_jets, const int64_t* ptr, long D, const T* x, long k, int include_self,
                int64_t* index, uint8_t* valid, int max_threads, long min_work) {
  int status = 0;
  long longest = 0, work = 0;
  for (long jet = 0; jet < n_jets; ++jet) {
    long n = ptr[jet + 1] - ptr[jet];
    if (n > longest) longest = n;
    work += n * n * (D > 0 ? D : 1);
  }
  long n8 = (longest + 7) & ~7L;
  int n_threads = work < min_work ? 1 : max_threads;
  if (n_threads > n_jets) n_threads = (int)n_jets;
  if (n_threads < 1) n_threads = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) reduction(| : status) if (n_threads > 1)
#endif
  {
    T* buf = (T*)malloc(sizeof(T) * (size_t)((D + 1 + longest) * n8 + k + 1));
    if (!buf) status = 1;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (long jet = 0; jet < n_jets; ++jet) {
      long s = ptr[jet], n = ptr[jet + 1] - s;
      if (buf && n > 0)
        SUF(knn_jet)(s, n, D, x, k, include_self, buf, buf + D * n8, buf + (D + 1) * n8,
                     buf + (D + 1 + longest) * n8, index, valid);
    }
    free(buf);
  }
  return status;
}

#undef EXP
#undef FABS
