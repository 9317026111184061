//! Inference kernels for the CPU backend where burn-flex has no fast one (measured in
//! docs/benchmarks.md): exact GELU, whose `erf` burn-flex takes from `libm` one scalar call per element,
//! and multi-head self-attention straight from the `[batch, seq, heads·dh]` layout the linear layers
//! produce, so that splitting heads costs no strided copies. They apply to burn-flex without autodiff
//! (encoding and retrieval); training and CUDA take burn's own ops, which compute the same function.

use super::device::Cpu;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention as fused_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use std::any::TypeId;

/// Whether `B` is the CPU inference backend, which these kernels serve.
fn applies<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Cpu>()
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().expect("CPU float tensors hold f32")
}

/// GELU in its exact form, `x · Φ(x)`, as HuggingFace's `"gelu"`.
pub fn gelu<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    if !applies::<B>() {
        return activation::gelu(x);
    }
    let (shape, device) = (x.shape(), x.device());
    let mut v = values(x);
    v.par_chunks_mut(1 << 14).for_each(gelu_in_place);
    Tensor::from_data(TensorData::new(v, shape), &device)
}

fn gelu_in_place(v: &mut [f32]) {
    for x in v {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf` as a rational function of `x` on [-4, 4] (beyond it erf is ±1 in f32): Eigen's and XLA's f32
/// approximation, a few ulp from the exact value, and branch-free so that it vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p - 2.101_024e-6;
    p = x2 * p - 5.692_506_4e-5;
    p = x2 * p - 7.349_906e-4;
    p = x2 * p - 2.954_6e-3;
    p = x2 * p - 1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 - 2.133_740_6e-4;
    q = x2 * q - 1.682_827e-3;
    q = x2 * q - 7.373_329e-3;
    q = x2 * q - 1.426_474e-2;
    x * p / q
}

/// Scaled dot-product self-attention over `heads` heads. `q`, `k`, `v` and the result are
/// `[batch, seq, heads·dh]`; `bias` is `[batch, 1, 1, seq]`, added to every query's scores (a large
/// negative value masks a padding key).
pub fn self_attention<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: usize, bias: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, s, d] = q.dims();
    let dh = d / heads;
    if !applies::<B>() {
        let split = |t: Tensor<B, 3>| t.reshape([b, s, heads, dh]).swap_dims(1, 2);
        let out = fused_attention(split(q), split(k), split(v), None, Some(bias), AttentionModuleOptions::default());
        return out.swap_dims(1, 2).reshape([b, s, d]);
    }
    let device = q.device();
    let (q, k, v, bias) = (values(q), values(k), values(v), values(bias));
    let mut out = vec![0f32; b * s * d];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let scale = 1.0 / (dh as f32).sqrt();
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0f32; s * s],
        |scores, task| {
            let (bi, hi) = (task / heads, task % heads);
            let base = bi * s * d + hi * dh;
            let out_ptr = &out_ptr;
            // SAFETY: each task writes the columns `hi·dh..(hi + 1)·dh` of the rows of batch `bi` only,
            // which no other task writes; the inputs are only read. Strides are in elements.
            unsafe {
                // scores[i][j] = scale · q_i · k_j
                gemm::gemm(
                    s, s, dh,
                    scores.as_mut_ptr(), 1, s as isize, false,
                    q.as_ptr().add(base), 1, d as isize,
                    k.as_ptr().add(base), d as isize, 1,
                    0.0, scale, false, false, false, gemm::Parallelism::None,
                );
            }
            let mask = &bias[bi * s..(bi + 1) * s];
            for row in scores.chunks_exact_mut(s) {
                softmax_in_place(row, mask);
            }
            unsafe {
                // out_i = Σ_j p_ij · v_j, written into the row layout of the result
                gemm::gemm(
                    s, dh, s,
                    out_ptr.0.add(base), 1, d as isize, false,
                    scores.as_ptr(), 1, s as isize,
                    v.as_ptr().add(base), 1, d as isize,
                    0.0, 1.0, false, false, false, gemm::Parallelism::None,
                );
            }
        },
    );
    Tensor::from_data(TensorData::new(out, [b, s, d]), &device)
}

/// A row of scores plus the key bias, as probabilities.
fn softmax_in_place(row: &mut [f32], bias: &[f32]) {
    let mut max = f32::NEG_INFINITY;
    for (x, b) in row.iter_mut().zip(bias) {
        *x += b;
        max = max.max(*x);
    }
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `e^x` for x ≤ 0 (softmax's arguments), branch-free so that it vectorises: `2^n · e^r` with
/// `n = round(x / ln 2)`, `|r| ≤ ln 2 / 2`, and `e^r` by its Taylor polynomial to `r^6` (relative error
/// below 2e-7); zero below -87, where `e^x` leaves f32's normal range.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let xc = x.max(-87.0);
    let n = (xc * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = xc - n * 0.693_145_75 - n * 1.428_606_8e-6; // ln 2 in two parts, so that r stays exact
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

/// The result's buffer, shared by the attention tasks (each writes its own columns).
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::CpuTrain;

    #[test]
    fn erf_is_within_a_few_ulp_of_libm() {
        let worst = (-6000..=6000).map(|i| i as f32 / 1000.0).map(|x| (erf(x) - libm_erf(x)).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-6, "erf differs from libm by {worst}");
    }

    fn libm_erf(x: f32) -> f32 {
        // erf through the exact GELU that burn computes: gelu(x) = x · (1 + erf(x / √2)) / 2.
        let y = x * std::f32::consts::SQRT_2;
        let g = activation::gelu(Tensor::<Cpu, 1>::from_floats([y], &Default::default())).into_scalar();
        if y == 0.0 { 0.0 } else { 2.0 * g / y - 1.0 }
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_std() {
        let worst = (0..=87_000).map(|i| -(i as f32) / 1000.0).map(|x| ((exp(x) - x.exp()) / x.exp().max(f32::MIN_POSITIVE)).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-6, "exp differs from std by a relative {worst}");
        assert_eq!(exp(-1e9), 0.0, "a masked score has no weight");
    }

    /// The kernels compute what burn's own ops (the path of training and CUDA) compute.
    #[test]
    fn kernels_match_burns_ops() {
        let device = Default::default();
        let (b, s, heads, dh) = (2, 7, 3, 4);
        let t = |seed: u64| {
            let n = b * s * heads * dh;
            let v: Vec<f32> = (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 250.0) - 2.0).collect();
            TensorData::new(v, [b, s, heads * dh])
        };
        // The second sequence has two padding positions.
        let mask: Vec<f32> = (0..b * s).map(|i| if i >= 2 * s - 2 { -1e9 } else { 0.0 }).collect();
        let bias = TensorData::new(mask, [b, 1, 1, s]);
        let fast = self_attention::<Cpu>(
            Tensor::from_data(t(1), &device),
            Tensor::from_data(t(2), &device),
            Tensor::from_data(t(3), &device),
            heads,
            Tensor::from_data(bias.clone(), &device),
        );
        let reference = self_attention::<CpuTrain>(
            Tensor::from_data(t(1), &device),
            Tensor::from_data(t(2), &device),
            Tensor::from_data(t(3), &device),
            heads,
            Tensor::from_data(bias, &device),
        );
        fast.into_data().assert_approx_eq::<f32>(&reference.into_data(), burn::tensor::Tolerance::absolute(1e-5));
        let g = gelu::<Cpu>(Tensor::from_data(t(4), &device));
        let g_ref = gelu::<CpuTrain>(Tensor::from_data(t(4), &device));
        g.into_data().assert_approx_eq::<f32>(&g_ref.into_data(), burn::tensor::Tolerance::absolute(1e-6));
    }
}
