/* Fused CPU kernels of crbench.metrics (private; conventions in that module's docstring).
 *
 * ssim_sums: SSIM of float32 planes, streamed row by row. Each input row is centred by the
 *   plane's level c (a subsample mean, as in crbench.metrics.ssim), padded with the centred
 *   value of zero (-c) and turned into four moments (dx, dy, dx^2 + dy^2 + C2,
 *   dx dy + C2 / 2), which are blurred horizontally into a ring of 11 rows; each output row
 *   is the vertical blur of that ring followed by the SSIM formula. The image is processed
 *   in strips of STRIP columns so that the ring stays in the L1 cache. This is the same
 *   arithmetic as the OpenCV and torch back ends (float32, separable Gaussian, zero padding)
 *   in one pass over the data instead of a dozen.
 * sample_sums: per-sample float64 sums of the squared error over all, cloudy and clear
 *   pixels and of the spectral angle, from per-pixel band sums of (x - y)^2, x^2, y^2 and
 *   (x k - y)^2 with k = |y| / |x| (the formulation of crbench.metrics.core._sam_parts, exact for
 *   identical spectra); the angle uses a branch-free float32 arctangent (atan01). It also
 *   returns the smallest and largest input value, so the caller needs no separate pass to
 *   validate the inputs.
 *
 * Both take raw addresses of C-contiguous float32 (float64 for the sums) buffers that the
 * Python wrapper (crbench.metrics.native) checks, and release the GIL while they run. Loops
 * are written so that compilers vectorise them; on x86-64 with GCC an AVX2/FMA clone is
 * chosen at run time where the CPU has it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define restrict __restrict
#endif

#define R 5          /* window radius */
#define K 11         /* window taps */
#define STRIP 128    /* columns per strip (ring: 11 rows x 4 moments x 128 floats = 22 KiB) */
#define C1 (0.01f * 0.01f)
#define C2 (0.03f * 0.03f)

/* An AVX2/FMA clone picked at load time (GCC >= 11 on x86-64 glibc, which has ifunc);
 * elsewhere the compiler's default target. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* out[j] = sum_k g[k] in[j + k] for a symmetric window g (g[k] == g[10 - k]) */
static inline void hblur(const float *restrict in, float *restrict out, int n, const float *g)
{
    const float g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4], g5 = g[5];
    for (int j = 0; j < n; j++) {
        const float *p = in + j;
        out[j] = g5 * p[5] + g0 * (p[0] + p[10]) + g1 * (p[1] + p[9]) + g2 * (p[2] + p[8])
               + g3 * (p[3] + p[7]) + g4 * (p[4] + p[6]);
    }
}

/* out[j] = sum_k g[k] rows[k][j] */
static inline void vblur(const float *const rows[K], float *restrict out, int n, const float *g)
{
    const float g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4], g5 = g[5];
    const float *restrict r0 = rows[0], *restrict r1 = rows[1], *restrict r2 = rows[2],
                *restrict r3 = rows[3], *restrict r4 = rows[4], *restrict r5 = rows[5],
                *restrict r6 = rows[6], *restrict r7 = rows[7], *restrict r8 = rows[8],
                *restrict r9 = rows[9], *restrict r10 = rows[10];
    for (int j = 0; j < n; j++)
        out[j] = g5 * r5[j] + g0 * (r0[j] + r10[j]) + g1 * (r1[j] + r9[j])
               + g2 * (r2[j] + r8[j]) + g3 * (r3[j] + r7[j]) + g4 * (r4[j] + r6[j]);
}

typedef struct {
    const float *x, *y, *g;
    int h, w;
    float cx, cy;     /* centring levels */
    float *pad;       /* 4 padded rows of n + 2R */
    float *slot[4][2 * K]; /* ring: moment q of input row r at slot[q][(r + R) % K], twice */
} Plane;

/* Horizontally blurred moments of columns [j0, j0 + n) of input row r (a halo row of -c
 * outside [0, h)) into ring slot `s`. */
static inline void moments_row(const Plane *P, int r, int j0, int n, int s)
{
    const int np = n + 2 * R, lo = j0 - R, hi = j0 + n + R;
    float *restrict dx = P->pad, *restrict dy = P->pad + np;
    float *restrict sq = P->pad + 2 * np, *restrict pr = P->pad + 3 * np;
    int a = lo < 0 ? 0 : lo, b = hi > P->w ? P->w : hi; /* columns inside the image */
    if (r < 0 || r >= P->h)
        a = b = hi;
    for (int j = lo; j < a; j++) { dx[j - lo] = -P->cx; dy[j - lo] = -P->cy; }
    for (int j = b; j < hi; j++) { dx[j - lo] = -P->cx; dy[j - lo] = -P->cy; }
    if (b > a) {
        const float *xr = P->x + (size_t)r * P->w, *yr = P->y + (size_t)r * P->w;
        for (int j = a; j < b; j++) { dx[j - lo] = xr[j] - P->cx; dy[j - lo] = yr[j] - P->cy; }
    }
    for (int j = 0; j < np; j++) {
        sq[j] = dx[j] * dx[j] + dy[j] * dy[j] + C2;
        pr[j] = dx[j] * dy[j] + 0.5f * C2;
    }
    for (int q = 0; q < 4; q++)
        hblur(P->pad + q * np, P->slot[q][s], n, P->g);
}

/* SSIM of one output row from its blurred moments m = (mu_dx, mu_dy, E[dx^2 + dy^2] + C2,
 * E[dx dy] + C2 / 2), 4 rows of n; added to acc and written to out. */
static inline void ssim_row(const float *restrict m, int n, float cx, float cy,
                            float *restrict acc, float *restrict out)
{
    const float *restrict a = m, *restrict b = m + n, *restrict s = m + 2 * n,
                *restrict p = m + 3 * n;
    for (int j = 0; j < n; j++) {
        float cov = p[j] - a[j] * b[j];                 /* cov_xy + C2 / 2 */
        float var = s[j] - a[j] * a[j] - b[j] * b[j];   /* var_x + var_y + C2 */
        float mx = a[j] + cx, my = b[j] + cy;
        float v = ((4.0f * mx * my + 2.0f * C1) * cov) / ((mx * mx + my * my + C1) * var);
        acc[j] += v;
        out[j] = v;
    }
}

static size_t workspace_floats(int w)
{
    int sw = w < STRIP ? w : STRIP;
    /* pad, ring, column sums, moments of one row, one SSIM row */
    return 4 * (size_t)(sw + 2 * R) + (size_t)K * 4 * sw + sw + 4 * (size_t)sw + sw;
}

static void centring_levels(Plane *P)
{
    int step = (P->h < P->w ? P->h : P->w) / 32;
    if (step < 1)
        step = 1;
    double sx = 0, sy = 0;
    long cnt = 0;
    for (int i = 0; i < P->h; i += step)
        for (int j = 0; j < P->w; j += step, cnt++) {
            sx += P->x[(size_t)i * P->w + j];
            sy += P->y[(size_t)i * P->w + j];
        }
    P->cx = (float)(sx / cnt);
    P->cy = (float)(sy / cnt);
}

/* Sum of the SSIM map of one h x w plane; the map goes to `map` when not NULL. */
CLONES
static double ssim_plane(const float *x, const float *y, int h, int w, const float *g,
                         float *ws, float *map)
{
    Plane P = {.x = x, .y = y, .g = g, .h = h, .w = w};
    centring_levels(&P);
    const int sw = w < STRIP ? w : STRIP;
    P.pad = ws;
    float *ring = ws + 4 * (sw + 2 * R), *acc = ring + (size_t)K * 4 * sw;
    float *mom = acc + sw, *row = mom + 4 * sw;
    for (int k = 0; k < K; k++)
        for (int q = 0; q < 4; q++)
            P.slot[q][k] = P.slot[q][k + K] = ring + ((size_t)k * 4 + q) * sw;
    double total = 0;
    for (int j0 = 0; j0 < w; j0 += sw) {
        const int n = w - j0 < sw ? w - j0 : sw;
        for (int j = 0; j < n; j++)
            acc[j] = 0;
        for (int r = -R; r < R; r++)  /* input rows -R .. R - 1 fill slots 0 .. 2R - 1 */
            moments_row(&P, r, j0, n, r + R);
        for (int i = 0; i < h; i++) {  /* output row i needs input rows i - R .. i + R */
            moments_row(&P, i + R, j0, n, (i + 2 * R) % K);
            for (int q = 0; q < 4; q++)
                vblur((const float *const *)&P.slot[q][i % K], mom + q * n, n, g);
            ssim_row(mom, n, P.cx, P.cy, acc, map ? map + (size_t)i * w + j0 : row);
        }
        for (int j = 0; j < n; j++)  /* float32 column sums (h terms), float64 from here */
            total += acc[j];
    }
    return total;
}

/* atan(t) for t in [0, 1]: t > tan(pi/8) is reduced by atan(t) = pi/4 + atan((t - 1) / (t + 1));
 * on |u| <= tan(pi/8), atan(u) = u + u^3 P(u^2) with P a degree-4 least-squares fit
 * (relative error < 7e-8 in float32, about one rounding). Branch-free, so it vectorises. */
static inline float atan01(float t)
{
    const int big = t > 0.41421356f;
    const float v = (t - 1.0f) / (t + 1.0f), u = big ? v : t, z = u * u;
    float p = -0.06097574532f;
    p = p * z + 0.10602192581f;
    p = p * z - 0.14244799316f;
    p = p * z + 0.19998548925f;
    p = p * z - 0.33333316445f;
    const float r = p * z * u + u;
    return big ? r + 0.78539816340f : r;
}

/* The spectral angle 2 atan2(|u - v|, |u + v|) from |x|^2, |y|^2 and w2 = |x k - y|^2 =
 * |y|^2 |u - v|^2 (crbench.metrics.core._sam_angles: a zero spectrum is the zero vector, pi/2
 * against a non-zero one, 0 between two). */
static inline float spectral_angle(float nx2, float ny2, float w2)
{
    const float has_x = nx2 > 0 ? 1.0f : 0.0f, has_y = ny2 > 0 ? 1.0f : 0.0f;
    const float q = w2 / (ny2 > 0 ? ny2 : 1.0f);   /* divisions never see 0 (vectorisable) */
    const float a2 = ny2 > 0 ? q : has_x;          /* |u - v|^2 */
    float b2 = 2.0f * (has_x + has_y) - a2;        /* |u + v|^2 */
    b2 = b2 > 0 ? b2 : 0.0f;
    const float a = sqrtf(a2), b = sqrtf(b2);
    const float hi = a > b ? a : b, lo = a > b ? b : a;
    const float t = atan01(lo / (hi > 0 ? hi : 1.0f));
    return 2.0f * (a > b ? 1.57079632679f - t : t);
}

/* Band sums of one row r of a (c, h, w) sample into q, nx, ny, ww (w floats each):
 * (x - y)^2, x^2, y^2 and (x k - y)^2 with k = |y| / |x| (0 where |x| = 0); lo and hi take
 * the running minimum and maximum of x and y per column (NaN shows in q instead). */
static inline void row_band_sums(const float *x, const float *y, int c, size_t hw, size_t o,
                                 int w, float *restrict q, float *restrict nx,
                                 float *restrict ny, float *restrict ww, float *restrict k,
                                 float *restrict lo, float *restrict hi)
{
    for (int j = 0; j < w; j++)
        q[j] = nx[j] = ny[j] = ww[j] = 0;
    for (int b = 0; b < c; b++) {
        const float *restrict xr = x + b * hw + o, *restrict yr = y + b * hw + o;
        for (int j = 0; j < w; j++) {
            const float xv = xr[j], yv = yr[j], d = xv - yv;
            const float mn = xv < yv ? xv : yv, mx = xv < yv ? yv : xv;
            q[j] += d * d;
            nx[j] += xv * xv;
            ny[j] += yv * yv;
            lo[j] = mn < lo[j] ? mn : lo[j];
            hi[j] = mx > hi[j] ? mx : hi[j];
        }
    }
    for (int j = 0; j < w; j++) {
        const float root = sqrtf(ny[j] / (nx[j] > 0 ? nx[j] : 1.0f));
        k[j] = nx[j] > 0 ? root : 0.0f;
    }
    for (int b = 0; b < c; b++) {
        const float *restrict xr = x + b * hw + o, *restrict yr = y + b * hw + o;
        for (int j = 0; j < w; j++) {
            float t = xr[j] * k[j] - yr[j];
            ww[j] += t * t;
        }
    }
}

/* Per-sample sums of one (c, h, w) sample: squared error over all pixels, the cloudy pixels
 * (cloudy[i] != 0) and the others, and the spectral angle, into tot[0..3] (float64 column
 * sums); the smallest and largest value of x and y into range[0..1] (so that the caller can
 * skip a separate pass to validate them); the angles also go to sam (h x w) when not NULL.
 * buf: 7 w floats; dacc: 4 w doubles. */
CLONES
static void sample_sums(const float *x, const float *y, const unsigned char *cloudy, int c,
                        int h, int w, double tot[4], float range[2], float *sam, float *buf,
                        double *dacc)
{
    const size_t hw = (size_t)h * w;
    float *q = buf, *nx = buf + w, *ny = buf + 2 * w, *ww = buf + 3 * w, *k = buf + 4 * w;
    float *lo = buf + 5 * w, *hi = buf + 6 * w;
    for (int j = 0; j < w; j++) {
        lo[j] = x[j];
        hi[j] = x[j];
    }
    double *restrict all = dacc, *restrict in = dacc + w, *restrict out = dacc + 2 * w,
           *restrict ang = dacc + 3 * w;
    for (int j = 0; j < 4 * w; j++)
        dacc[j] = 0;
    for (int r = 0; r < h; r++) {
        const size_t o = (size_t)r * w;
        row_band_sums(x, y, c, hw, o, w, q, nx, ny, ww, k, lo, hi);
        for (int j = 0; j < w; j++)
            k[j] = spectral_angle(nx[j], ny[j], ww[j]);
        const unsigned char *restrict cl = cloudy + o;
        for (int j = 0; j < w; j++) {
            const double e = q[j], in_cloud = cl[j] ? e : 0.0;
            all[j] += e;
            in[j] += in_cloud;
            out[j] += e - in_cloud;
            ang[j] += k[j];
        }
        if (sam)
            for (int j = 0; j < w; j++)
                sam[o + j] = k[j];
    }
    for (int i = 0; i < 4; i++) {
        double s = 0;
        for (int j = 0; j < w; j++)
            s += dacc[(size_t)i * w + j];
        tot[i] = s;
    }
    range[0] = lo[0];
    range[1] = hi[0];
    for (int j = 1; j < w; j++) {
        range[0] = lo[j] < range[0] ? lo[j] : range[0];
        range[1] = hi[j] > range[1] ? hi[j] : range[1];
    }
}

/* ------------------------------------------------------------------------ Python glue */

static int check_dims(Py_ssize_t n, Py_ssize_t h, Py_ssize_t w)
{
    if (n < 0 || h < 1 || w < 1 || h > INT_MAX || w > INT_MAX || n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "bad sizes n=%zd h=%zd w=%zd", n, h, w);
        return 0;
    }
    return 1;
}

static PyObject *py_ssim_sums(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long xa, ya, ga, sa, ma;
    Py_ssize_t planes, h, w;
    if (!PyArg_ParseTuple(args, "KKnnnKKK", &xa, &ya, &planes, &h, &w, &ga, &sa, &ma))
        return NULL;
    if (!check_dims(planes, h, w))
        return NULL;
    float *ws = malloc(workspace_floats((int)w) * sizeof(float));
    if (!ws)
        return PyErr_NoMemory();
    const float *x = (const float *)(uintptr_t)xa, *y = (const float *)(uintptr_t)ya;
    const float *g = (const float *)(uintptr_t)ga;
    double *sums = (double *)(uintptr_t)sa;
    float *map = (float *)(uintptr_t)ma;
    const size_t hw = (size_t)h * (size_t)w;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t p = 0; p < planes; p++)
        sums[p] = ssim_plane(x + p * hw, y + p * hw, (int)h, (int)w, g, ws,
                             map ? map + p * hw : NULL);
    Py_END_ALLOW_THREADS
    free(ws);
    Py_RETURN_NONE;
}

static PyObject *py_sample_sums(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long xa, ya, ca, ta, ra, sa;
    Py_ssize_t b, c, h, w;
    if (!PyArg_ParseTuple(args, "KKKnnnnKKK", &xa, &ya, &ca, &b, &c, &h, &w, &ta, &ra, &sa))
        return NULL;
    if (!check_dims(b, h, w) || !check_dims(c, h, w))
        return NULL;
    float *buf = malloc(7 * (size_t)w * sizeof(float));
    double *dacc = malloc(4 * (size_t)w * sizeof(double));
    if (!buf || !dacc) {
        free(buf);
        free(dacc);
        return PyErr_NoMemory();
    }
    const float *x = (const float *)(uintptr_t)xa, *y = (const float *)(uintptr_t)ya;
    const size_t hw = (size_t)h * (size_t)w, chw = (size_t)c * hw;
    const unsigned char *cloudy = (const unsigned char *)(uintptr_t)ca;
    unsigned char *none = NULL;  /* no regions given: every pixel clear */
    if (!cloudy && !(cloudy = none = calloc(hw * (size_t)b + 1, 1))) {
        free(buf);
        free(dacc);
        return PyErr_NoMemory();
    }
    double *tot = (double *)(uintptr_t)ta;
    float *range = (float *)(uintptr_t)ra, *sam = (float *)(uintptr_t)sa;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++)
        sample_sums(x + i * chw, y + i * chw, cloudy + i * hw, (int)c, (int)h,
                    (int)w, tot + 4 * i, range + 2 * i, sam ? sam + i * hw : NULL, buf, dacc);
    Py_END_ALLOW_THREADS
    free(none);
    free(buf);
    free(dacc);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"ssim_sums", py_ssim_sums, METH_VARARGS,
     "ssim_sums(x, y, planes, h, w, window, sums, map): SSIM sums of float32 planes."},
    {"sample_sums", py_sample_sums, METH_VARARGS,
     "sample_sums(x, y, cloudy, b, c, h, w, totals, range, sam): squared-error and SAM "
     "sums, value range."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_kernel",
    .m_doc = "Fused CPU kernels of crbench.metrics (private; see crbench.metrics.native).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
