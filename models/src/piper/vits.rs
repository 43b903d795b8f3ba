//! The VITS network of a Piper voice, inference only, written once against
//! burn's run-time [`Device`]. Read it next to the VITS paper (Kim et al.
//! 2021) and `docs/voice.md`; module paths in comments are the PyTorch ones
//! that name the weights.
//!
//! ids → **text encoder** (transformer with relative-position attention) →
//! per-phoneme mean and log-scale of the prior → **stochastic duration
//! predictor** (reverse normalising flows with rational-quadratic splines) →
//! durations → **alignment** (each phoneme repeated for its frames) →
//! prior sample → **coupling flow** (reverse) → **HiFi-GAN** → audio.
//!
//! One utterance at a time (batch 1), so no padding masks are needed: every
//! position is real. Each convolution's geometry (padding, dilation, stride,
//! groups) is read from its node in the `.onnx` graph, not assumed from a
//! training config, so voices of other sizes load unchanged.

use super::cpu::{CpuConv, CpuConvT, Geometry};
use super::onnx::OnnxFile;
use crate::error::{ModelError, Result};
use burn::prelude::*;
use burn::tensor::activation::{gelu, leaky_relu, relu, sigmoid, softmax, softplus, tanh};
use burn::tensor::module::{conv_transpose1d, conv1d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Distribution, Int};
use std::sync::Arc;

/// Slope of HiFi-GAN's leaky ReLUs between layers (`LRELU_SLOPE`).
const LRELU_SLOPE: f64 = 0.1;
/// LayerNorm epsilon of VITS' channel norm.
const LN_EPS: f64 = 1e-5;
/// The spline's range; outside it the flow is the identity ("linear tails").
const TAIL_BOUND: f32 = 5.0;
/// Floors of the spline's bins and knot derivatives.
const MIN_BIN_WIDTH: f32 = 1e-3;
const MIN_BIN_HEIGHT: f32 = 1e-3;
const MIN_DERIVATIVE: f32 = 1e-3;

/// The three inference knobs of a Piper voice (its `scales` input).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// Noise added to the prior sample (0 = the mean: flat but repeatable).
    pub noise: f32,
    /// Duration multiplier: above 1 is slower speech.
    pub length: f32,
    /// Noise fed to the duration predictor (0 = its most likely rhythm).
    pub noise_w: f32,
}

/// A 1-D convolution with the geometry its graph node gives.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor<3>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<1>,
    /// The same convolution as per-tap GEMMs, on the CPU device.
    cpu: Option<Arc<CpuConv>>,
}

impl Conv {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.run(x, None)
    }

    /// `forward(x) + residual`; on the CPU the residual is where the
    /// products accumulate, so the add costs nothing.
    fn forward_add(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.run(x, Some(residual))
    }

    fn run(&self, x: Tensor<3>, residual: Option<Tensor<3>>) -> Tensor<3> {
        if let Some((cpu, g, t_out)) = self.cpu_fits(&x, residual.as_ref()) {
            let [_, _, t] = x.dims();
            let dev = x.device();
            let y = cpu.run(&host_values(x), t, g, residual.map(host_values));
            return Tensor::from_data(TensorData::new(y, [1, cpu.c_out(), t_out]), &dev);
        }
        let y = conv1d(
            x,
            self.weight.clone(),
            self.bias.clone(),
            self.options.clone(),
        );
        match residual {
            Some(r) => y + r,
            None => y,
        }
    }

    /// The CPU form with this call's geometry and output length, when it
    /// applies (on the CPU device, batch 1, the shapes it was built for).
    fn cpu_fits(
        &self,
        x: &Tensor<3>,
        residual: Option<&Tensor<3>>,
    ) -> Option<(&CpuConv, Geometry, usize)> {
        let cpu = self.cpu.as_deref()?;
        let [b, c, t] = x.dims();
        let [(pad_left, pad_right)] = self.options.padding;
        let g = Geometry {
            pad_left,
            pad_right,
            dilation: self.options.dilation[0],
        };
        let t_out = cpu.out_len(t, g)?;
        let fits = b == 1
            && c == cpu.c_in()
            && residual.is_none_or(|r| r.dims() == [1, cpu.c_out(), t_out]);
        fits.then_some((cpu, g, t_out))
    }

    fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
    fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }
}

/// `x`'s values on the host, as f32 (which the voice's tensors already are).
fn host_values(x: Tensor<3>) -> Vec<f32> {
    x.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 just before")
}

/// A transposed 1-D convolution (HiFi-GAN's upsampling).
#[derive(Debug, Clone)]
struct ConvT {
    weight: Tensor<3>,
    bias: Option<Tensor<1>>,
    options: ConvTransposeOptions<1>,
    /// The same as per-tap GEMMs, on the CPU device.
    cpu: Option<Arc<CpuConvT>>,
}

impl ConvT {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, c, t] = x.dims();
        let (s, pad) = (self.options.stride[0], self.options.padding[0]);
        let t_out = self
            .cpu
            .as_ref()
            .filter(|cpu| b == 1 && c == cpu.c_in())
            .and_then(|cpu| Some((cpu, cpu.out_len(t, s, pad)?)));
        if let Some((cpu, t_out)) = t_out {
            let dev = x.device();
            let y = cpu.run(&host_values(x), t, s, pad);
            return Tensor::from_data(TensorData::new(y, [1, cpu.c_out(), t_out]), &dev);
        }
        conv_transpose1d(
            x,
            self.weight.clone(),
            self.bias.clone(),
            self.options.clone(),
        )
    }
}

/// LayerNorm over channels of `[1, C, T]` (`modules.LayerNorm`: gamma, beta).
#[derive(Debug, Clone)]
struct ChannelNorm {
    gamma: Tensor<3>,
    beta: Tensor<3>,
}

impl ChannelNorm {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mean = x.clone().mean_dim(1);
        let centred = x - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(1);
        centred / (var + LN_EPS).sqrt() * self.gamma.clone() + self.beta.clone()
    }
}

/// A convolution node's weight, optional bias, pads, and then stride,
/// dilation and groups.
type NodeWeights = (Tensor<3>, Option<Tensor<1>>, Vec<i64>, Vec<i64>);

/// Reads weights by module path from the graph.
struct Loader<'a> {
    file: &'a OnnxFile,
    dev: &'a Device,
}

impl Loader<'_> {
    fn bad(&self, name: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Tensor {
            path: self.file.path().to_owned(),
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    fn dims(&self, name: &str) -> Result<Vec<usize>> {
        self.file
            .dims(name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| self.bad(name, "missing from the voice file"))
    }

    fn tensor<const D: usize>(&self, name: &str) -> Result<Tensor<D>> {
        let dims = self.dims(name)?;
        if dims.len() != D {
            return Err(self.bad(name, format!("shape {dims:?}, expected {D} dimensions")));
        }
        let v = self.file.floats(name, &dims)?;
        Ok(Tensor::from_data(TensorData::new(v, dims), self.dev))
    }

    /// Per-channel parameters (`[C]` or `[C, 1]`) as `[1, C, 1]`.
    fn channels(&self, name: &str) -> Result<Tensor<3>> {
        let dims = self.dims(name)?;
        let c = dims.first().copied().unwrap_or(0);
        if dims.iter().skip(1).any(|&d| d != 1) {
            return Err(self.bad(
                name,
                format!("shape {dims:?}, expected one value per channel"),
            ));
        }
        let v = self.file.floats(name, &dims)?;
        Ok(Tensor::from_data(TensorData::new(v, [1, c, 1]), self.dev))
    }

    /// The initializer node `node` takes as input `index`: weights are found
    /// by the graph node that consumes them, because the export names some
    /// after their module, some after an op (`sid` for the phoneme
    /// embedding) and leaves some unnamed (`onnx::Conv_*`), and constant-folds
    /// others (`exp(-logs)` of the duration flow's affine step).
    fn input(&self, node: &str, index: usize) -> Result<String> {
        let n = self
            .file
            .node(node)
            .ok_or_else(|| self.bad(node, "no such node in the graph (not a Piper VITS voice?)"))?;
        let name = n
            .inputs
            .get(index)
            .ok_or_else(|| self.bad(node, format!("has no input {index}")))?;
        if self.file.initializer(name).is_none() {
            return Err(self.bad(
                node,
                format!("its input `{name}` is computed in the graph, not stored"),
            ));
        }
        Ok(name.clone())
    }

    /// A channel norm, by its module path (`/enc_p/encoder/norm_layers_1.0`):
    /// gamma multiplies, beta is added.
    fn norm(&self, module: &str) -> Result<ChannelNorm> {
        Ok(ChannelNorm {
            gamma: self.channels(&self.input(&format!("{module}/Mul"), 1)?)?,
            beta: self.channels(&self.input(&format!("{module}/Add_1"), 1)?)?,
        })
    }

    /// The weight and bias inputs of graph node `node` (`/dec/conv_pre/Conv`)
    /// and its geometry: pads, then stride, dilation and groups.
    fn weights_of(&self, node: &str) -> Result<NodeWeights> {
        let weight = self.tensor::<3>(&self.input(node, 1)?)?;
        let n = self
            .file
            .node(node)
            .ok_or_else(|| self.bad(node, "no such node"))?;
        let bias = match n.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(_) => Some(self.tensor::<1>(&self.input(node, 2)?)?),
            None => None,
        };
        let attr = |k: &str, default: Vec<i64>| n.ints.get(k).cloned().unwrap_or(default);
        let pads = attr("pads", vec![0, 0]);
        let rest = [
            attr("strides", vec![1]),
            attr("dilations", vec![1]),
            attr("group", vec![1]),
        ];
        let geometry = rest
            .iter()
            .map(|v| v.first().copied().unwrap_or(1))
            .collect();
        Ok((weight, bias, pads, geometry))
    }

    fn usize_attr(&self, node: &str, v: i64) -> Result<usize> {
        usize::try_from(v)
            .ok()
            .filter(|&v| v < 1 << 20)
            .ok_or_else(|| self.bad(node, format!("attribute value {v} out of range")))
    }

    /// The convolution of module path `module` (`/enc_p/proj`).
    fn conv(&self, module: &str) -> Result<Conv> {
        let node = format!("{module}/Conv");
        let (weight, bias, pads, g) = self.weights_of(&node)?;
        let [p0, p1] = [pads.first(), pads.get(1)].map(|p| p.copied().unwrap_or(0));
        let u = |v| self.usize_attr(&node, v);
        let options =
            ConvOptions::new_with_padding([u(g[0])?], [(u(p0)?, u(p1)?)], [u(g[1])?], u(g[2])?);
        let cpu = self.cpu_conv(&node, &weight, bias.as_ref(), &options)?;
        Ok(Conv {
            weight,
            bias,
            options,
            cpu,
        })
    }

    /// The per-tap CPU form of a convolution, on the CPU device for the
    /// stride-1, ungrouped ones (all of HiFi-GAN's and the flows'; the
    /// duration predictor's depthwise ones stay with burn).
    fn cpu_conv(
        &self,
        node: &str,
        weight: &Tensor<3>,
        bias: Option<&Tensor<1>>,
        o: &ConvOptions<1>,
    ) -> Result<Option<Arc<CpuConv>>> {
        if !self.cpu_path() || o.groups != 1 || o.stride != [1] {
            return Ok(None);
        }
        let dims = weight.dims();
        let w = self.host(node, weight.clone().into_data())?;
        let b = bias
            .map(|b| self.host(node, b.clone().into_data()))
            .transpose()?;
        Ok(CpuConv::new(&w, dims, b).map(Arc::new))
    }

    /// Whether convolutions get their CPU form: on the CPU device, unless
    /// SEER_FUSED_CPU=0 keeps burn's (as it keeps the LLM's burn graph),
    /// for comparing the two paths.
    fn cpu_path(&self) -> bool {
        let off = std::env::var_os("SEER_FUSED_CPU").is_some_and(|v| v == "0");
        !off && *self.dev == Device::flex()
    }

    /// A weight's values on the host.
    fn host(&self, node: &str, t: TensorData) -> Result<Vec<f32>> {
        t.try_to_vec::<f32>()
            .map_err(|e| self.bad(node, format!("reading its weights: {e:?}")))
    }

    fn conv_t(&self, module: &str) -> Result<ConvT> {
        let node = format!("{module}/ConvTranspose");
        let (weight, bias, pads, g) = self.weights_of(&node)?;
        if pads.len() == 2 && pads[0] != pads[1] {
            return Err(self.bad(&node, format!("uneven padding {pads:?}")));
        }
        let u = |v| self.usize_attr(&node, v);
        let p = u(pads.first().copied().unwrap_or(0))?;
        let options = ConvTransposeOptions::new([u(g[0])?], [p], [0], [u(g[1])?], u(g[2])?);
        let cpu = if self.cpu_path()
            && options.groups == 1
            && options.dilation == [1]
            && options.padding_out == [0]
        {
            let dims = weight.dims();
            let w = self.host(&node, weight.clone().into_data())?;
            let b = bias
                .as_ref()
                .map(|b| self.host(&node, b.clone().into_data()))
                .transpose()?;
            CpuConvT::new(&w, dims, b).map(Arc::new)
        } else {
            None
        };
        Ok(ConvT {
            weight,
            bias,
            options,
            cpu,
        })
    }

    /// How many `{prefix}{i}{suffix}` nodes or weights exist, counting from 0.
    fn count(&self, exists: impl Fn(usize) -> bool) -> usize {
        (0..).take_while(|&i| exists(i)).count()
    }

    fn has_node(&self, name: &str) -> bool {
        self.file.node(name).is_some()
    }
}

/// One transformer layer of the text encoder.
#[derive(Debug, Clone)]
struct EncoderLayer {
    q: Conv,
    k: Conv,
    v: Conv,
    o: Conv,
    /// Relative-position key and value embeddings `[2w+1, head dim]`.
    rel_k: Tensor<2>,
    rel_v: Tensor<2>,
    norm1: ChannelNorm,
    ffn1: Conv,
    ffn2: Conv,
    norm2: ChannelNorm,
}

#[derive(Debug, Clone)]
struct TextEncoder {
    /// `[symbols, hidden]`.
    emb: Tensor<2>,
    layers: Vec<EncoderLayer>,
    proj: Conv,
    heads: usize,
    window: usize,
}

impl TextEncoder {
    fn load(l: &Loader) -> Result<Self> {
        let emb = l.tensor::<2>(&l.input("/enc_p/emb/Gather", 0)?)?;
        let hidden = emb.dims()[1];
        let n = l.count(|i| l.has_node(&format!("/enc_p/encoder/attn_layers.{i}/conv_q/Conv")));
        if n == 0 {
            return Err(l.bad("/enc_p/encoder", "no attention layers found"));
        }
        let mut layers = Vec::with_capacity(n);
        let (mut heads, mut window) = (0, 0);
        for i in 0..n {
            let a = format!("/enc_p/encoder/attn_layers.{i}");
            let rel = |w: &str| -> Result<Tensor<2>> {
                let name = format!("enc_p.encoder.attn_layers.{i}.emb_rel_{w}");
                let t = l.tensor::<3>(&name)?;
                let [share, span, kc] = t.dims();
                if share != 1 || span % 2 == 0 || kc == 0 || hidden % kc != 0 {
                    return Err(l.bad(
                        &name,
                        format!("shape {:?} is not [1, 2w+1, head dim]", t.dims()),
                    ));
                }
                Ok(t.reshape([span, kc]))
            };
            let (rel_k, rel_v) = (rel("k")?, rel("v")?);
            let [span, kc] = rel_k.dims();
            (heads, window) = (hidden / kc, span / 2);
            let f = format!("/enc_p/encoder/ffn_layers.{i}");
            layers.push(EncoderLayer {
                q: l.conv(&format!("{a}/conv_q"))?,
                k: l.conv(&format!("{a}/conv_k"))?,
                v: l.conv(&format!("{a}/conv_v"))?,
                o: l.conv(&format!("{a}/conv_o"))?,
                rel_k,
                rel_v,
                norm1: l.norm(&format!("/enc_p/encoder/norm_layers_1.{i}"))?,
                ffn1: same_padded(l.conv(&format!("{f}/conv_1"))?),
                ffn2: same_padded(l.conv(&format!("{f}/conv_2"))?),
                norm2: l.norm(&format!("/enc_p/encoder/norm_layers_2.{i}"))?,
            });
        }
        Ok(Self {
            emb,
            layers,
            proj: l.conv("/enc_p/proj")?,
            heads,
            window,
        })
    }

    /// `(hidden [1,H,T], mean [1,C,T], log-scale [1,C,T])` for phoneme ids.
    fn forward(&self, ids: Tensor<1, Int>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let hidden = self.emb.dims()[1];
        let t = ids.dims()[0];
        let x = self.emb.clone().select(0, ids) * (hidden as f64).sqrt();
        let mut x = x.transpose().reshape([1, hidden, t]);
        for layer in &self.layers {
            let y = self.attention(layer, x.clone());
            x = layer.norm1.forward(x + y);
            let y = layer.ffn2.forward(relu(layer.ffn1.forward(x.clone())));
            x = layer.norm2.forward(x + y);
        }
        let stats = self.proj.forward(x.clone());
        let c = stats.dims()[1] / 2;
        let m = stats.clone().narrow(1, 0, c);
        let logs = stats.narrow(1, c, c);
        (x, m, logs)
    }

    /// Multi-head self-attention with relative-position keys and values
    /// (Shaw et al.), windowed to ±`window` positions.
    fn attention(&self, a: &EncoderLayer, x: Tensor<3>) -> Tensor<3> {
        let [_, hidden, t] = x.dims();
        let (h, kc) = (self.heads, hidden / self.heads);
        let split = |y: Tensor<3>| y.reshape([1, h, kc, t]).swap_dims(2, 3); // [1,h,t,kc]
        let q = split(a.q.forward(x.clone())) / (kc as f64).sqrt();
        let k = split(a.k.forward(x.clone()));
        let v = split(a.v.forward(x));
        let mut scores = q.clone().matmul(k.swap_dims(2, 3)); // [1,h,t,t]
        let rel_k = self.relative_embeddings(a.rel_k.clone(), t); // [2t-1, kc]
        let rel_logits = q.matmul(
            rel_k
                .transpose()
                .reshape([1, 1, kc, 2 * t - 1])
                .repeat_dim(1, h),
        );
        scores = scores + relative_to_absolute(rel_logits);
        let p = softmax(scores, 3);
        let mut out = p.clone().matmul(v); // [1,h,t,kc]
        let rel_v = self.relative_embeddings(a.rel_v.clone(), t);
        let weights = absolute_to_relative(p); // [1,h,t,2t-1]
        out = out + weights.matmul(rel_v.reshape([1, 1, 2 * t - 1, kc]).repeat_dim(1, h));
        a.o.forward(out.swap_dims(2, 3).reshape([1, hidden, t]))
    }

    /// `[2t-1, kc]`: row `j` is the embedding of relative position `j-(t-1)`,
    /// zero beyond the window.
    fn relative_embeddings(&self, rel: Tensor<2>, t: usize) -> Tensor<2> {
        let w = self.window;
        let [_, kc] = rel.dims();
        let pad = t.saturating_sub(w + 1);
        let rel = if pad > 0 {
            let z = Tensor::<2>::zeros([pad, kc], &rel.device());
            Tensor::cat(vec![z.clone(), rel, z], 0)
        } else {
            rel
        };
        let start = (w + 1).saturating_sub(t);
        rel.narrow(0, start, 2 * t - 1)
    }
}

/// `[1,h,t,2t-1]` logits by relative position → `[1,h,t,t]` by absolute
/// position: `out[i][j] = x[i][j-i+t-1]`, by VITS' pad-and-reshape trick.
fn relative_to_absolute(x: Tensor<4>) -> Tensor<4> {
    let [b, h, t, _] = x.dims();
    let dev = x.device();
    let x = Tensor::cat(vec![x, Tensor::zeros([b, h, t, 1], &dev)], 3); // [.., t, 2t]
    let flat = x.reshape([b, h, 2 * t * t]);
    let flat = Tensor::cat(vec![flat, Tensor::zeros([b, h, t - 1], &dev)], 2);
    flat.reshape([b, h, t + 1, 2 * t - 1])
        .narrow(2, 0, t)
        .narrow(3, t - 1, t)
}

/// The inverse view: `[1,h,t,t]` → `[1,h,t,2t-1]`, `out[i][r] = x[i][i+r-(t-1)]`.
fn absolute_to_relative(x: Tensor<4>) -> Tensor<4> {
    let [b, h, t, _] = x.dims();
    let dev = x.device();
    let x = Tensor::cat(vec![x, Tensor::zeros([b, h, t, t - 1], &dev)], 3); // [.., t, 2t-1]
    let flat = x.reshape([b, h, t * (2 * t - 1)]);
    let flat = Tensor::cat(vec![Tensor::zeros([b, h, t], &dev), flat], 2);
    flat.reshape([b, h, t, 2 * t]).narrow(3, 1, 2 * t - 1)
}

/// The FFN pads explicitly ("same", `(k-1)/2` left, `k/2` right) before a
/// convolution whose node has no padding.
fn same_padded(mut c: Conv) -> Conv {
    let k = c.kernel();
    if c.options.padding == [(0, 0)] && k > 1 {
        c.options.padding = [((k - 1) / 2, k / 2)];
    }
    c
}

/// Dilated depth-separable convolutions (`modules.DDSConv`).
#[derive(Debug, Clone)]
struct DdsConv {
    layers: Vec<(Conv, ChannelNorm, Conv, ChannelNorm)>,
}

impl DdsConv {
    fn load(l: &Loader, module: &str) -> Result<Self> {
        let n = l.count(|i| l.has_node(&format!("{module}/convs_sep.{i}/Conv")));
        let layers = (0..n)
            .map(|i| {
                Ok((
                    l.conv(&format!("{module}/convs_sep.{i}"))?,
                    l.norm(&format!("{module}/norms_1.{i}"))?,
                    l.conv(&format!("{module}/convs_1x1.{i}"))?,
                    l.norm(&format!("{module}/norms_2.{i}"))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    fn forward(&self, mut x: Tensor<3>, g: Option<Tensor<3>>) -> Tensor<3> {
        if let Some(g) = g {
            x = x + g;
        }
        for (sep, n1, pw, n2) in &self.layers {
            let y = gelu(n1.forward(sep.forward(x.clone())));
            let y = gelu(n2.forward(pw.forward(y)));
            x = x + y;
        }
        x
    }
}

/// One reverse step of the duration predictor's flows.
// A handful per voice, built once: boxing the spline's convolutions would
// buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum DurationFlow {
    /// Swap the two channels.
    Flip,
    /// `(z - m) · exp(-logs)` (the export stores `exp(-logs)` folded).
    Affine { m: Tensor<3>, inv_scale: Tensor<3> },
    /// A rational-quadratic spline on channel 1 conditioned on channel 0.
    Spline {
        pre: Conv,
        convs: DdsConv,
        proj: Conv,
        bins: usize,
        filters: usize,
    },
}

/// `modules.StochasticDurationPredictor`, reverse direction only.
#[derive(Debug, Clone)]
struct DurationPredictor {
    pre: Conv,
    convs: DdsConv,
    proj: Conv,
    /// In the order inference applies them.
    flows: Vec<DurationFlow>,
}

impl DurationPredictor {
    fn load(l: &Loader) -> Result<Self> {
        // flows = [ElementwiseAffine, (ConvFlow, Flip) × n]. Inference walks
        // them backwards and skips the first ConvFlow (it only shapes the
        // noise the training pass sees), so its weights are not in the graph.
        let has = |i: usize| l.has_node(&format!("/dp/flows.{i}/pre/Conv"));
        let mut last_spline = 1;
        while has(last_spline + 2) {
            last_spline += 2;
        }
        let mut flows = Vec::new();
        let mut i = last_spline + 1;
        while i > 0 {
            i -= 1;
            match i {
                0 => flows.push(DurationFlow::Affine {
                    m: l.channels(&l.input("/dp/flows.0/Sub", 1)?)?,
                    inv_scale: l.channels(&l.input("/dp/flows.0/Mul", 1)?)?,
                }),
                1 => {}
                i if i % 2 == 0 => flows.push(DurationFlow::Flip),
                i => {
                    let m = format!("/dp/flows.{i}");
                    let pre = l.conv(&format!("{m}/pre"))?;
                    let proj = l.conv(&format!("{m}/proj"))?;
                    let filters = pre.out_channels();
                    let out = proj.out_channels();
                    if out % 3 != 2 {
                        return Err(l.bad(
                            &format!("{m}/proj"),
                            format!("{out} outputs is not 3·bins − 1"),
                        ));
                    }
                    flows.push(DurationFlow::Spline {
                        pre,
                        convs: DdsConv::load(l, &format!("{m}/convs"))?,
                        proj,
                        bins: out.div_ceil(3),
                        filters,
                    });
                }
            }
        }
        Ok(Self {
            pre: l.conv("/dp/pre")?,
            convs: DdsConv::load(l, "/dp/convs")?,
            proj: l.conv("/dp/proj")?,
            flows,
        })
    }

    /// Log-durations `[1,1,T]` for encoder output `x` and noise `[1,2,T]`.
    fn forward(&self, x: Tensor<3>, noise: Tensor<3>) -> Tensor<3> {
        let x = self
            .proj
            .forward(self.convs.forward(self.pre.forward(x), None));
        let mut z = noise;
        for flow in &self.flows {
            z = match flow {
                DurationFlow::Flip => z.flip([1]),
                DurationFlow::Affine { m, inv_scale } => (z - m.clone()) * inv_scale.clone(),
                DurationFlow::Spline {
                    pre,
                    convs,
                    proj,
                    bins,
                    filters,
                } => {
                    let z0 = z.clone().narrow(1, 0, 1);
                    let z1 = z.narrow(1, 1, 1);
                    let h = proj.forward(convs.forward(pre.forward(z0.clone()), Some(x.clone())));
                    let z1 = inverse_spline(z1, h, *bins, *filters);
                    Tensor::cat(vec![z0, z1], 1)
                }
            };
        }
        z.narrow(1, 0, 1)
    }
}

/// The inverse of the piecewise rational-quadratic transform (Durkan et al.,
/// "Neural Spline Flows") with linear tails, for `y [1,1,T]` and spline
/// parameters `h [1, 3·bins−1, T]`. Bin look-ups are dense one-hot masks, so
/// it is the same few tensor ops on every backend.
fn inverse_spline(y: Tensor<3>, h: Tensor<3>, bins: usize, filters: usize) -> Tensor<3> {
    let [_, _, t] = y.dims();
    let dev = y.device();
    let h = h.swap_dims(1, 2); // [1, T, 3K-1]
    let scale = (filters as f64).sqrt();
    let uw = h.clone().narrow(2, 0, bins) / scale;
    let uh = h.clone().narrow(2, bins, bins) / scale;
    let ud = h.narrow(2, 2 * bins, bins - 1);
    let b = TAIL_BOUND;
    // Knots: softmax bin sizes with a floor, cumulated onto [-B, B].
    let knots = |u: Tensor<3>, min: f32| -> (Tensor<3>, Tensor<3>) {
        let sizes = softmax(u, 2) * (1.0 - min * bins as f32) + min;
        let inner = sizes.cumsum(2).narrow(2, 0, bins - 1) * (2.0 * b) - b;
        let edge = |v: f32| Tensor::<3>::full([1, t, 1], v, &dev);
        let cum = Tensor::cat(vec![edge(-b), inner, edge(b)], 2); // [1,T,K+1]
        let sizes = cum.clone().narrow(2, 1, bins) - cum.clone().narrow(2, 0, bins);
        (cum, sizes)
    };
    let (cw, widths) = knots(uw, MIN_BIN_WIDTH);
    let (ch, heights) = knots(uh, MIN_BIN_HEIGHT);
    let end = (1.0 - MIN_DERIVATIVE).exp_m1().ln();
    let edge = Tensor::<3>::full([1, t, 1], end, &dev);
    let d = softplus(Tensor::cat(vec![edge.clone(), ud, edge], 2), 1.0) + MIN_DERIVATIVE; // [1,T,K+1]
    let x = y.clone().swap_dims(1, 2); // [1,T,1]
    // Which bin each value falls in, as a one-hot [1,T,K] (the last knot is
    // nudged up so B itself falls in the last bin).
    let nudge = Tensor::<3>::zeros([1, t, bins], &dev);
    let nudge = Tensor::cat(vec![nudge, Tensor::full([1, t, 1], 1e-6, &dev)], 2);
    let ge = x.clone().greater_equal(ch.clone() + nudge).float();
    let onehot = ge.clone().narrow(2, 0, bins) - ge.narrow(2, 1, bins);
    let pick = |v: Tensor<3>| (v * onehot.clone()).sum_dim(2); // [1,T,1]
    let in_cw = pick(cw.narrow(2, 0, bins));
    let in_ch = pick(ch.narrow(2, 0, bins));
    let in_w = pick(widths.clone());
    let in_h = pick(heights.clone());
    let delta = pick(heights / widths);
    let d0 = pick(d.clone().narrow(2, 0, bins));
    let d1 = pick(d.narrow(2, 1, bins));
    let dy = x.clone() - in_ch;
    let sum = d0.clone() + d1 - delta.clone() * 2.0;
    let qa = dy.clone() * sum.clone() + in_h.clone() * (delta.clone() - d0.clone());
    let qb = in_h * d0 - dy.clone() * sum;
    let qc = -(delta * dy);
    let disc = qb.clone().powi_scalar(2) - qa * qc.clone() * 4.0;
    let root = (qc * 2.0) / (-qb - disc.sqrt());
    let out = root * in_w + in_cw;
    let inside = x
        .clone()
        .greater_equal_elem(-b)
        .bool_and(x.clone().lower_equal_elem(b));
    x.mask_where(inside, out).swap_dims(1, 2)
}

/// WaveNet-style gated dilated convolutions (`modules.WN`), no conditioning.
#[derive(Debug, Clone)]
struct WaveNet {
    layers: Vec<(Conv, Conv)>,
    hidden: usize,
}

impl WaveNet {
    fn load(l: &Loader, module: &str) -> Result<Self> {
        let n = l.count(|i| l.has_node(&format!("{module}/in_layers.{i}/Conv")));
        let layers: Vec<(Conv, Conv)> = (0..n)
            .map(|i| {
                Ok((
                    l.conv(&format!("{module}/in_layers.{i}"))?,
                    l.conv(&format!("{module}/res_skip_layers.{i}"))?,
                ))
            })
            .collect::<Result<_>>()?;
        let hidden = layers.first().map_or(0, |(c, _)| c.out_channels() / 2);
        Ok(Self { layers, hidden })
    }

    fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        let h = self.hidden;
        let mut out: Option<Tensor<3>> = None;
        let last = self.layers.len().saturating_sub(1);
        for (i, (inner, res_skip)) in self.layers.iter().enumerate() {
            let a = inner.forward(x.clone());
            let acts = tanh(a.clone().narrow(1, 0, h)) * sigmoid(a.narrow(1, h, h));
            let rs = res_skip.forward(acts);
            let skip = if i < last {
                x = x + rs.clone().narrow(1, 0, h);
                rs.narrow(1, h, h)
            } else {
                rs
            };
            out = Some(match out {
                Some(o) => o + skip,
                None => skip,
            });
        }
        out.unwrap_or(x)
    }
}

/// One mean-only affine coupling layer (`modules.ResidualCouplingLayer`).
#[derive(Debug, Clone)]
struct Coupling {
    pre: Conv,
    enc: WaveNet,
    post: Conv,
}

/// `ResidualCouplingBlock`: couplings interleaved with channel flips.
#[derive(Debug, Clone)]
struct Flow {
    /// Coupling layers in module order (`flows.0`, `flows.2`, ...).
    layers: Vec<Coupling>,
}

impl Flow {
    fn load(l: &Loader) -> Result<Self> {
        let n = l.count(|i| l.has_node(&format!("/flow/flows.{}/pre/Conv", 2 * i)));
        let layers = (0..n)
            .map(|i| {
                let m = format!("/flow/flows.{}", 2 * i);
                Ok(Coupling {
                    pre: l.conv(&format!("{m}/pre"))?,
                    enc: WaveNet::load(l, &format!("{m}/enc"))?,
                    post: l.conv(&format!("{m}/post"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    fn reverse(&self, mut z: Tensor<3>) -> Tensor<3> {
        for c in self.layers.iter().rev() {
            z = z.flip([1]);
            let half = z.dims()[1] / 2;
            let z0 = z.clone().narrow(1, 0, half);
            let z1 = z.narrow(1, half, half);
            let m = c.post.forward(c.enc.forward(c.pre.forward(z0.clone())));
            z = Tensor::cat(vec![z0, z1 - m], 1);
        }
        z
    }
}

/// HiFi-GAN's generator with ResBlock2 blocks (`models.Generator`).
#[derive(Debug, Clone)]
struct Decoder {
    pre: Conv,
    /// Each upsampling stage and its residual blocks (each a list of convs).
    stages: Vec<(ConvT, Vec<Vec<Conv>>)>,
    post: Conv,
}

impl Decoder {
    fn load(l: &Loader) -> Result<Self> {
        let ups = l.count(|i| l.has_node(&format!("/dec/ups.{i}/ConvTranspose")));
        let blocks = l.count(|i| l.has_node(&format!("/dec/resblocks.{i}/convs.0/Conv")));
        if ups == 0 || !blocks.is_multiple_of(ups) {
            return Err(l.bad(
                "/dec",
                format!("{ups} upsampling stages and {blocks} residual blocks"),
            ));
        }
        let per = blocks / ups;
        let mut stages = Vec::with_capacity(ups);
        for s in 0..ups {
            let mut res = Vec::with_capacity(per);
            for b in s * per..(s + 1) * per {
                let m = format!("/dec/resblocks.{b}");
                let n = l.count(|j| l.has_node(&format!("{m}/convs.{j}/Conv")));
                res.push(
                    (0..n)
                        .map(|j| l.conv(&format!("{m}/convs.{j}")))
                        .collect::<Result<_>>()?,
                );
            }
            stages.push((l.conv_t(&format!("/dec/ups.{s}"))?, res));
        }
        Ok(Self {
            pre: l.conv("/dec/conv_pre")?,
            stages,
            post: l.conv("/dec/conv_post")?,
        })
    }

    fn forward(&self, z: Tensor<3>) -> Tensor<3> {
        let mut x = self.pre.forward(z);
        for (up, blocks) in &self.stages {
            x = up.forward(leaky_relu(x, LRELU_SLOPE));
            let mut sum: Option<Tensor<3>> = None;
            for convs in blocks {
                let mut y = x.clone();
                for c in convs {
                    y = c.forward_add(leaky_relu(y.clone(), LRELU_SLOPE), y);
                }
                sum = Some(match sum {
                    Some(s) => s + y,
                    None => y,
                });
            }
            if let Some(s) = sum {
                x = s / blocks.len() as f64;
            }
        }
        // The last activation is PyTorch's default slope, not LRELU_SLOPE.
        tanh(self.post.forward(leaky_relu(x, 0.01)))
    }
}

/// A loaded Piper VITS network.
#[derive(Debug, Clone)]
pub struct Vits {
    device: Device,
    enc: TextEncoder,
    dp: DurationPredictor,
    flow: Flow,
    dec: Decoder,
    /// Audio samples per spectrogram frame (the product of the strides).
    hop: usize,
}

/// What one synthesis produced.
#[derive(Debug, Clone)]
pub struct Synthesis {
    /// Mono samples in [-1, 1] at the voice's sample rate.
    pub samples: Vec<f32>,
    /// Frames given to each phoneme id.
    pub durations: Vec<u32>,
}

impl Vits {
    /// Builds the network from a Piper `.onnx` graph's weights.
    pub fn load(file: &OnnxFile, dev: &Device) -> Result<Self> {
        let l = Loader { file, dev };
        let dec = Decoder::load(&l)?;
        let hop = dec
            .stages
            .iter()
            .map(|(u, _)| u.options.stride[0])
            .product();
        Ok(Self {
            device: dev.clone(),
            enc: TextEncoder::load(&l)?,
            dp: DurationPredictor::load(&l)?,
            flow: Flow::load(&l)?,
            dec,
            hop,
        })
    }

    /// Number of phoneme symbols the embedding knows.
    pub fn symbols(&self) -> usize {
        self.enc.emb.dims()[0]
    }

    /// Audio samples per frame.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Speaks `ids` (already checked to be below [`Self::symbols`]).
    pub fn synthesize(&self, ids: &[u32], scales: Scales) -> Synthesis {
        let dev = &self.device;
        let t = ids.len();
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [t]), dev);
        let (x, m, logs) = self.enc.forward(ids);
        let noise = if scales.noise_w > 0.0 {
            Tensor::random([1, 2, t], Distribution::Normal(0.0, 1.0), dev) * scales.noise_w
        } else {
            Tensor::zeros([1, 2, t], dev)
        };
        let logw = self.dp.forward(x, noise);
        let w = (logw.exp() * scales.length).ceil();
        let durations: Vec<u32> = w
            .into_data()
            .iter::<f32>()
            .map(|d| d.clamp(0.0, 1e6) as u32)
            .collect();
        // Alignment: frame f belongs to the phoneme whose span covers it.
        let frames: Vec<i64> = durations
            .iter()
            .enumerate()
            .flat_map(|(i, &d)| std::iter::repeat_n(i as i64, d as usize))
            .collect();
        if frames.is_empty() {
            return Synthesis {
                samples: Vec::new(),
                durations,
            };
        }
        let n = frames.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(frames, [n]), dev);
        let m = m.select(2, index.clone());
        let mut z = m;
        if scales.noise > 0.0 {
            let logs = logs.select(2, index);
            let eps = Tensor::random(z.dims(), Distribution::Normal(0.0, 1.0), dev);
            z = z + eps * logs.exp() * scales.noise;
        }
        let z = self.flow.reverse(z);
        let audio = self.dec.forward(z);
        Synthesis {
            samples: audio.into_data().iter::<f32>().collect(),
            durations,
        }
    }
}
