#include "quant/gptq.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "util/error.h"

namespace metharme::quant {

namespace {

constexpr int kTile = 256;       // Hessian tile (one sgemm per pair of tiles)
constexpr int kRowChunk = 256;   // output rows per sweep task; fixed so results do not depend on threads

// RAII: OpenBLAS threads for a LAPACK call, back to one after (our pool does the rest).
struct BlasThreads {
  explicit BlasThreads(int n) : on(n > 1) {
    if (on) openblas_set_num_threads(n);
  }
  ~BlasThreads() {
    if (on) openblas_set_num_threads(1);
  }
  bool on;
};

// Cholesky factor U (upper, row-major view) of H^-1 for H in `a` [K][K], symmetric.
// Column-major 'L' calls touch only one triangle: the other keeps H for retries, and the
// column-major lower triangle read row-major is exactly the upper factor wanted.
bool chol_inverse_upper(float* a, int K, int threads) {
  BlasThreads bt(threads);
  if (LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', K, a, K) != 0) return false;
  if (LAPACKE_spotri(LAPACK_COL_MAJOR, 'L', K, a, K) != 0) return false;
  if (LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', K, a, K) != 0) return false;
  return true;
}

// Row p of `a` [rows][cols] becomes old row perm[p], in place, following the permutation's cycles.
void permute_rows(float* a, size_t rows, size_t cols, const std::vector<int32_t>& perm, float* tmp) {
  std::vector<bool> done(rows, false);
  for (size_t start = 0; start < rows; ++start) {
    if (done[start] || size_t(perm[start]) == start) continue;
    std::memcpy(tmp, a + start * cols, cols * sizeof(float));
    size_t p = start;
    for (;;) {
      done[p] = true;
      const size_t from = size_t(perm[p]);
      if (from == start) {
        std::memcpy(a + p * cols, tmp, cols * sizeof(float));
        break;
      }
      std::memcpy(a + p * cols, a + from * cols, cols * sizeof(float));
      p = from;
    }
  }
}

}  // namespace

Hessian::Hessian(int k) : k_(k), h_(size_t(k) * size_t(k), 0.0f) {}

void Hessian::add(const float* x, int rows, ThreadPool& pool) {
  const int nt = (k_ + kTile - 1) / kTile;
  std::vector<std::pair<int, int>> tiles;
  for (int i = 0; i < nt; ++i)
    for (int j = i; j < nt; ++j) tiles.push_back({i, j});
  pool.run(int(tiles.size()), [&](int t, int) {
    auto [bi, bj] = tiles[size_t(t)];
    int r0 = bi * kTile, c0 = bj * kTile;
    int nr = std::min(kTile, k_ - r0), nc = std::min(kTile, k_ - c0);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nr, nc, rows, 1.0f, x + r0, k_, x + c0, k_, 1.0f,
                h_.data() + size_t(r0) * size_t(k_) + size_t(c0), k_);
  });
  ++n_seq_;
}

std::vector<float> Hessian::finish() {
  MH_CHECK(n_seq_ > 0, "Hessian: no calibration data was seen");
  const size_t K = size_t(k_);
  const float s = float(2.0 / double(n_seq_));
  for (size_t i = 0; i < K; ++i) {
    for (size_t j = i; j < K; ++j) h_[i * K + j] *= s;
    for (size_t j = 0; j < i; ++j) h_[i * K + j] = h_[j * K + i];
  }
  return std::move(h_);
}

QuantizedLinear gptq_quantize(const float* W, int N, int K, std::vector<float>& H, const QuantConfig& c,
                              ThreadPool& pool, int lapack_threads) {
  MH_CHECK(H.size() == size_t(K) * size_t(K), "gptq: Hessian size does not match the input size ", K);
  const size_t Nz = size_t(N), Kz = size_t(K);
  const int maxq = c.maxq();
  const bool grouped = c.group_size > 0;
  const int gs = grouped ? c.group_size : K;
  MH_CHECK(K % gs == 0, "group size ", gs, " does not divide the input size ", K);
  QuantizedLinear q;
  q.n_out = N;
  q.n_in = K;
  q.group_size = gs;
  q.n_groups = K / gs;
  q.codes.resize(Kz * Nz);
  q.scales.resize(size_t(q.n_groups) * Nz);
  q.zeros.resize(q.scales.size());
  q.g_idx.resize(Kz);

  // WT [K][N]: column k of W is row k here, so the sweep reads and updates contiguous rows.
  std::vector<float> WT(Kz * Nz);
  pool.parallel_for(N, 64, [&](int64_t n0, int64_t n1, int) {
    for (int64_t n = n0; n < n1; ++n)
      for (size_t k = 0; k < Kz; ++k) WT[k * Nz + size_t(n)] = W[size_t(n) * Kz + k];
  });

  // Ungrouped grid: from the original W (before dead columns are zeroed), as the reference does.
  std::vector<Grid> row_grid;
  if (!grouped) {
    row_grid.resize(Nz);
    for (size_t n = 0; n < Nz; ++n) {
      auto [lo, hi] = std::minmax_element(W + n * Kz, W + (n + 1) * Kz);
      row_grid[n] = make_grid(*lo, *hi, c);
    }
  }

  // Dead inputs: never active in calibration; their weights cannot matter.
  for (size_t k = 0; k < Kz; ++k) {
    if (H[k * Kz + k] == 0.0f) {
      H[k * Kz + k] = 1.0f;
      std::fill(WT.begin() + int64_t(k * Nz), WT.begin() + int64_t((k + 1) * Nz), 0.0f);
      ++q.dead_columns;
    }
  }

  // Static groups: grids of the original column ranges, fixed before any update.
  std::vector<Grid> static_grid;
  if (grouped && c.static_groups) {
    static_grid.resize(size_t(q.n_groups) * Nz);
    for (int g = 0; g < q.n_groups; ++g)
      for (size_t n = 0; n < Nz; ++n) {
        float lo = WT[size_t(g) * size_t(gs) * Nz + n], hi = lo;
        for (int j = 1; j < gs; ++j) {
          float v = WT[(size_t(g) * size_t(gs) + size_t(j)) * Nz + n];
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        static_grid[size_t(g) * Nz + n] = make_grid(lo, hi, c);
      }
  }

  // Act-order: columns by descending Hessian diagonal (stable for ties).
  std::vector<int32_t> perm(Kz);
  std::iota(perm.begin(), perm.end(), 0);
  if (c.act_order) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int32_t a, int32_t b) { return H[size_t(a) * Kz + size_t(a)] > H[size_t(b) * Kz + size_t(b)]; });
    // In place (no second K x K matrix): columns of every row, then whole rows.
    std::vector<float> row(std::max(Kz, Nz));
    for (size_t i = 0; i < Kz; ++i) {
      float* h = &H[i * Kz];
      for (size_t j = 0; j < Kz; ++j) row[j] = h[size_t(perm[j])];
      std::memcpy(h, row.data(), Kz * sizeof(float));
    }
    permute_rows(H.data(), Kz, Kz, perm, row.data());
    permute_rows(WT.data(), Kz, Nz, perm, row.data());
    q.perm = perm;
  }

  // Damping, then U = upper Cholesky factor of H^-1; if H is not positive definite, damp harder.
  double mean_diag = 0;
  for (size_t k = 0; k < Kz; ++k) mean_diag += H[k * Kz + k];
  mean_diag /= double(K);
  std::vector<float> diag(Kz);
  for (size_t k = 0; k < Kz; ++k) diag[k] = H[k * Kz + k];
  float damp = float(c.percdamp * mean_diag);
  if (!(damp > 0)) damp = 1e-6f;
  for (;;) {
    for (size_t k = 0; k < Kz; ++k) H[k * Kz + k] = diag[k] + damp;
    if (chol_inverse_upper(H.data(), K, lapack_threads)) break;
    MH_CHECK(q.damp_retries < 6, "gptq: the Hessian stays singular even with damping ", damp,
             " (calibration data too small or degenerate?)");
    ++q.damp_retries;
    damp *= 10;
    // Restore the factored triangle from the untouched one (see chol_inverse_upper).
    for (size_t i = 0; i < Kz; ++i)
      for (size_t j = i + 1; j < Kz; ++j) H[i * Kz + j] = H[j * Kz + i];
  }
  q.damp = damp;
  const float* U = H.data();  // row-major upper triangle: U[i][j], j >= i

  // The sweep. Output rows are independent: each task owns a fixed chunk of rows.
  const int B = std::max(1, c.block_size);
  const int n_chunks = (N + kRowChunk - 1) / kRowChunk;
  std::vector<double> chunk_loss(size_t(n_chunks), 0.0);
  pool.run(n_chunks, [&](int t, int) {
    const int n0 = t * kRowChunk, nc = std::min(kRowChunk, N - n0);
    std::vector<float> E(size_t(B) * size_t(nc)), stale(size_t(B) * size_t(nc));
    std::vector<Grid> grid(static_cast<size_t>(nc));
    if (!grouped)
      for (int n = 0; n < nc; ++n) grid[size_t(n)] = row_grid[size_t(n0 + n)];
    double loss = 0;
    for (int i1 = 0; i1 < K; i1 += B) {
      const int i2 = std::min(i1 + B, K);
      for (int c0 = i1; c0 < i2; ++c0)
        std::memcpy(&stale[size_t(c0 - i1) * size_t(nc)], &WT[size_t(c0) * Nz + size_t(n0)], size_t(nc) * sizeof(float));
      for (int col = i1; col < i2; ++col) {
        if (grouped && c.static_groups) {
          const size_t g = size_t(perm[size_t(col)] / gs);
          for (int n = 0; n < nc; ++n) grid[size_t(n)] = static_grid[g * Nz + size_t(n0 + n)];
        } else if (grouped && col % gs == 0) {
          // Dynamic group [col, col+gs): rows inside this block as they were when it started,
          // rows beyond it as they are (untouched by this block so far).
          for (int n = 0; n < nc; ++n) {
            float lo = INFINITY, hi = -INFINITY;
            for (int j = col; j < col + gs; ++j) {
              float v = j < i2 ? stale[size_t(j - i1) * size_t(nc) + size_t(n)] : WT[size_t(j) * Nz + size_t(n0 + n)];
              lo = std::min(lo, v);
              hi = std::max(hi, v);
            }
            grid[size_t(n)] = make_grid(lo, hi, c);
          }
          const size_t g = size_t(col / gs);
          for (int n = 0; n < nc; ++n) {
            q.scales[g * Nz + size_t(n0 + n)] = grid[size_t(n)].scale;
            q.zeros[g * Nz + size_t(n0 + n)] = uint8_t(grid[size_t(n)].zero);
          }
        }
        float* w = &WT[size_t(col) * Nz + size_t(n0)];
        float* e = &E[size_t(col - i1) * size_t(nc)];
        uint8_t* codes = &q.codes[size_t(perm[size_t(col)]) * Nz + size_t(n0)];
        const float d = U[size_t(col) * Kz + size_t(col)];
        for (int n = 0; n < nc; ++n) {
          const Grid g = grid[size_t(n)];
          const int code = quant_code(w[n], g, maxq);
          codes[n] = uint8_t(code);
          const float qv = g.scale * (float(code) - g.zero);
          const float r = w[n] - qv;
          loss += double(r * r / (d * d)) / 2;
          e[n] = r / d;
        }
        const float* urow = U + size_t(col) * Kz;
        for (int j = col + 1; j < i2; ++j) {
          float* wj = &WT[size_t(j) * Nz + size_t(n0)];
          const float u = urow[j];
          for (int n = 0; n < nc; ++n) wj[n] -= u * e[n];
        }
      }
      // Lazy update of the columns after the block: W[:, i2:] -= E * U[i1:i2, i2:].
      if (i2 < K)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K - i2, nc, i2 - i1, -1.0f, U + size_t(i1) * Kz + size_t(i2),
                    K, E.data(), nc, 1.0f, &WT[size_t(i2) * Nz + size_t(n0)], int(Nz));
    }
    chunk_loss[size_t(t)] = loss;
  });
  for (double l : chunk_loss) q.loss += l;

  // Grids of ungrouped and static layouts; g_idx maps each original column to its group.
  if (!grouped) {
    for (size_t n = 0; n < Nz; ++n) {
      q.scales[n] = row_grid[n].scale;
      q.zeros[n] = uint8_t(row_grid[n].zero);
    }
    std::fill(q.g_idx.begin(), q.g_idx.end(), 0);
  } else if (c.static_groups) {
    for (size_t i = 0; i < static_grid.size(); ++i) {
      q.scales[i] = static_grid[i].scale;
      q.zeros[i] = uint8_t(static_grid[i].zero);
    }
    for (int k = 0; k < K; ++k) q.g_idx[size_t(k)] = k / gs;
  } else {
    for (int p = 0; p < K; ++p) q.g_idx[size_t(perm[size_t(p)])] = p / gs;
  }
  return q;
}

}  // namespace metharme::quant
