/* Native CPU kernels of jettag's fused Lorentz pair messages (forward and backward).
 *
 * Built and loaded by jettag/ops/_native.py (plain C, no Python or PyTorch headers: it
 * compiles in about a second). For every particle i of a jet they run the whole pair
 * pipeline of jettag.ops.fused.lorentz_messages over the other particles j of the jet while
 * those pair rows are in the core's L1/L2 cache:
 *
 *   z_ij  = relu(hu_i + hv_j + psi_n(ij) w_psi[0] + psi_d(ij) w_psi[1])
 *   m_ij  = relu(z_ij W_e^T + b_e)                  (matrix products: below)
 *   g_ij  = sigmoid(m_ij . w_m + b_m)
 *   msum_i = sum_j g_ij m_ij
 *   t_ij  = relu(g_ij (m_ij W_x1^T) + b_x1) . w_x2  (= relu((g m) W_x1^T + b_x1) . w_x2)
 *   xs_i  = mean_j clamp((x_i - x_j) t_ij, +-clamp)
 *
 * and, for the backward pass, recompute them and go back through the same steps. No
 * pair-sized tensor is ever written to memory, there is no padding and no scatter. psi of
 * the two invariants comes precomputed (vectorised log1p in PyTorch). The particles are
 * split into contiguous ranges of about equal pair counts, one per thread; in the backward
 * pass each thread sums the weight gradients and the senders' gradients in its own buffers,
 * added up at the end in a fixed order (deterministic). Matrix products use
 * register-blocked AVX2/FMA micro-kernels for float32 when compiled with -mavx2 -mfma,
 * plain loops otherwise (and for float64).
 *
 * The same library holds the k-nearest-neighbour search within jets of jettag.ops.knn
 * (jt_knn): per jet, distances from the transposed coordinates, 8 partners at a time, and
 * an insertion into the k best; no distance matrix, no sort, one call for the batch.
 *
 * The type-generic code is in _native_body.h, included once per floating type.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define JT_AVX2 1
#else
#define JT_AVX2 0
#endif

int jt_abi_version(void) { return 4; }
int jt_has_avx2(void) { return JT_AVX2; }

/* Runs fn on each of n argument blocks (n <= 64), in parallel. With OpenMP the work goes
 * to the OpenMP runtime's threads: loaded into a PyTorch process, the runtime is PyTorch's
 * own (one libgomp per process), so its already running (and possibly spin-waiting)
 * workers do the work instead of competing for the cores with new threads. */
static void run_ranges(void* (*fn)(void*), void* args, size_t size, int n) {
  char* base = (char*)args;
#ifdef _OPENMP
#pragma omp parallel num_threads(n)
  {
    int team = omp_get_num_threads();
    for (int t = omp_get_thread_num(); t < n; t += team) fn(base + t * size);
  }
#else
  pthread_t threads[64];
  int started[64] = {0};
  for (int t = 1; t < n; ++t)
    started[t] = pthread_create(&threads[t], NULL, fn, base + t * size) == 0;
  for (int t = 1; t < n; ++t) /* a thread that did not start: run its range here */
    if (!started[t]) fn(base + t * size);
  fn(base);
  for (int t = 1; t < n; ++t)
    if (started[t]) pthread_join(threads[t], NULL);
#endif
}

#if JT_AVX2
/* float32 micro-kernels: 4 (or 1) rows x 24 (or 8) columns of out (row stride N),
 * accumulated over all K in named registers (arrays of __m256 end up on the stack).
 * A(r, k) = A[r * rs + k * ks]; B (K, N) row-major; initial value: out (acc), the bias
 * row or 0; relu on the way out. */
#define LD(p) _mm256_loadu_ps(p)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define INIT(r, v) \
  (acc ? LD(out + (r) * N + 8 * (v)) : bias ? LD(bias + 8 * (v)) : _mm256_setzero_ps())
#define ST(p, v) _mm256_storeu_ps(p, relu ? _mm256_max_ps(v, _mm256_setzero_ps()) : (v))
#define BC(p) _mm256_broadcast_ss(p)

static inline void micro_4x3(long K, long N, const float* A, long rs, long ks,
                             const float* B, const float* bias, int acc, int relu,
                             float* out) {
  __m256 c00 = INIT(0, 0), c01 = INIT(0, 1), c02 = INIT(0, 2);
  __m256 c10 = INIT(1, 0), c11 = INIT(1, 1), c12 = INIT(1, 2);
  __m256 c20 = INIT(2, 0), c21 = INIT(2, 1), c22 = INIT(2, 2);
  __m256 c30 = INIT(3, 0), c31 = INIT(3, 1), c32 = INIT(3, 2);
  const float *a0 = A, *a1 = A + rs, *a2 = A + 2 * rs, *a3 = A + 3 * rs;
  for (long k = 0; k < K; ++k) {
    const float* b = B + k * N;
    __m256 b0 = LD(b), b1 = LD(b + 8), b2 = LD(b + 16), a;
    long o = k * ks;
    a = BC(a0 + o);
    c00 = FMA(a, b0, c00); c01 = FMA(a, b1, c01); c02 = FMA(a, b2, c02);
    a = BC(a1 + o);
    c10 = FMA(a, b0, c10); c11 = FMA(a, b1, c11); c12 = FMA(a, b2, c12);
    a = BC(a2 + o);
    c20 = FMA(a, b0, c20); c21 = FMA(a, b1, c21); c22 = FMA(a, b2, c22);
    a = BC(a3 + o);
    c30 = FMA(a, b0, c30); c31 = FMA(a, b1, c31); c32 = FMA(a, b2, c32);
  }
  ST(out, c00); ST(out + 8, c01); ST(out + 16, c02); out += N;
  ST(out, c10); ST(out + 8, c11); ST(out + 16, c12); out += N;
  ST(out, c20); ST(out + 8, c21); ST(out + 16, c22); out += N;
  ST(out, c30); ST(out + 8, c31); ST(out + 16, c32);
}

static inline void micro_4x1(long K, long N, const float* A, long rs, long ks,
                             const float* B, const float* bias, int acc, int relu,
                             float* out) {
  __m256 c0 = INIT(0, 0), c1 = INIT(1, 0), c2 = INIT(2, 0), c3 = INIT(3, 0);
  const float *a0 = A, *a1 = A + rs, *a2 = A + 2 * rs, *a3 = A + 3 * rs;
  for (long k = 0; k < K; ++k) {
    __m256 b0 = LD(B + k * N);
    long o = k * ks;
    c0 = FMA(BC(a0 + o), b0, c0);
    c1 = FMA(BC(a1 + o), b0, c1);
    c2 = FMA(BC(a2 + o), b0, c2);
    c3 = FMA(BC(a3 + o), b0, c3);
  }
  ST(out, c0); ST(out + N, c1); ST(out + 2 * N, c2); ST(out + 3 * N, c3);
}

static inline void micro_1x3(long K, long N, const float* A, long rs, long ks,
                             const float* B, const float* bias, int acc, int relu,
                             float* out) {
  (void)rs;
  __m256 c0 = INIT(0, 0), c1 = INIT(0, 1), c2 = INIT(0, 2);
  for (long k = 0; k < K; ++k) {
    const float* b = B + k * N;
    __m256 a = BC(A + k * ks);
    c0 = FMA(a, LD(b), c0); c1 = FMA(a, LD(b + 8), c1); c2 = FMA(a, LD(b + 16), c2);
  }
  ST(out, c0); ST(out + 8, c1); ST(out + 16, c2);
}

static inline void micro_1x1(long K, long N, const float* A, long rs, long ks,
                             const float* B, const float* bias, int acc, int relu,
                             float* out) {
  (void)rs;
  __m256 c0 = INIT(0, 0);
  for (long k = 0; k < K; ++k) c0 = FMA(BC(A + k * ks), LD(B + k * N), c0);
  ST(out, c0);
}

static void gemm_avx2(long R, long K, long N, const float* A, long rs, long ks,
                      const float* B, const float* bias, int acc, int relu, float* out) {
  long r = 0;
  for (; r + 4 <= R; r += 4) {
    long n = 0;
    for (; n + 24 <= N; n += 24)
      micro_4x3(K, N, A + r * rs, rs, ks, B + n, bias ? bias + n : NULL, acc, relu,
                out + r * N + n);
    for (; n < N; n += 8)
      micro_4x1(K, N, A + r * rs, rs, ks, B + n, bias ? bias + n : NULL, acc, relu,
                out + r * N + n);
  }
  for (; r < R; ++r) {
    long n = 0;
    for (; n + 24 <= N; n += 24)
      micro_1x3(K, N, A + r * rs, rs, ks, B + n, bias ? bias + n : NULL, acc, relu,
                out + r * N + n);
    for (; n < N; n += 8)
      micro_1x1(K, N, A + r * rs, rs, ks, B + n, bias ? bias + n : NULL, acc, relu,
                out + r * N + n);
  }
}

static inline float hsum_f32(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

static inline float dot_avx2(const float* a, const float* b, long n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  long c = 0;
  for (; c + 16 <= n; c += 16) {
    acc0 = FMA(LD(a + c), LD(b + c), acc0);
    acc1 = FMA(LD(a + c + 8), LD(b + c + 8), acc1);
  }
  for (; c + 8 <= n; c += 8) acc0 = FMA(LD(a + c), LD(b + c), acc0);
  float sum = hsum_f32(_mm256_add_ps(acc0, acc1));
  for (; c < n; ++c) sum += a[c] * b[c];
  return sum;
}

static inline float relu_dot_avx2(const float* q, float g, const float* bias, const float* w,
                                  long n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 gv = _mm256_set1_ps(g), zero = _mm256_setzero_ps();
  long c = 0;
  for (; c + 16 <= n; c += 16) {
    __m256 v0 = FMA(LD(q + c), gv, LD(bias + c));
    __m256 v1 = FMA(LD(q + c + 8), gv, LD(bias + c + 8));
    acc0 = FMA(_mm256_max_ps(v0, zero), LD(w + c), acc0);
    acc1 = FMA(_mm256_max_ps(v1, zero), LD(w + c + 8), acc1);
  }
  for (; c + 8 <= n; c += 8)
    acc0 = FMA(_mm256_max_ps(FMA(LD(q + c), gv, LD(bias + c)), zero), LD(w + c), acc0);
  float sum = hsum_f32(_mm256_add_ps(acc0, acc1));
  for (; c < n; ++c) {
    float v = q[c] * g + bias[c];
    sum += (v > 0 ? v : 0.0f) * w[c];
  }
  return sum;
}
#endif

#define T float
#define SUF(name) name##_f32
#define JT_F32 1
#include "_native_body.h"
#undef T
#undef SUF
#undef JT_F32

#define T double
#define SUF(name) name##_f64
#define JT_F32 0
#include "_native_body.h"
#undef T
#undef SUF
#undef JT_F32
