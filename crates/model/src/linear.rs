//! The linear layer of every projection: `y = x·Wᵀ (+ b)` over a base weight held as a
//! tensor or in a [`WeightFormat`], plus the LoRA deltas of the rows' adapters as the
//! forward pass's [`RowPlan`] says (none, one for every row, or one per row through the
//! [`bgmv`](crate::kernels::bgmv) kernel).

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::dense::{Dense, DenseOp, WeightFormat};
use crate::error::Result;
use crate::kernels::bgmv::{rows_cpu_add, rows_gathered};
use crate::lora::{LoraAdapter, LoraPair, Proj};
use crate::profile::{self, Phase};
use crate::routing::RowPlan;

/// The base weight of a projection.
#[derive(Clone, Debug)]
pub(crate) enum BaseWeight {
    /// A tensor: a training variable (read live, so each optimiser step shows), or a frozen
    /// weight off the CPU / in a compute dtype other than f32.
    Tensor {
        /// `W`, `[out, in]` as Hugging Face stores it; for a frozen weight the transposed
        /// view of `wt`.
        weight: Tensor,
        /// `Wᵀ`, `[in, out]`, contiguous, when frozen: candle's gemm then reads its right-hand
        /// side row by row (1.5–4.8× faster at 2–16 rows than through a transposed view).
        wt: Option<Tensor>,
    },
    /// A frozen weight on the CPU, held in its [`WeightFormat`] and multiplied by the dense
    /// kernel (`dense.rs`).
    Dense(Arc<Dense>),
}

/// A projection `y = x·Wᵀ (+ b)` plus per-row LoRA deltas.
#[derive(Clone, Debug)]
pub(crate) struct LoraLinear {
    pub(crate) base: BaseWeight,
    pub(crate) bias: Option<Tensor>,
    out: usize,
    inp: usize,
    layer: usize,
    proj: Proj,
}

impl LoraLinear {
    /// Reads `{proj}.weight` (and `.bias`); a frozen weight on the CPU is held in `format`.
    pub(crate) fn new(
        vb: candle_nn::VarBuilder,
        cfg: &crate::Config,
        layer: usize,
        proj: Proj,
        bias: bool,
        format: Option<WeightFormat>,
    ) -> Result<Self> {
        let (out, inp) = proj.dims(cfg);
        let vb = vb.pp(proj.name());
        let weight = vb.get((out, inp), "weight")?;
        let bias = if bias {
            Some(vb.get(out, "bias")?)
        } else {
            None
        };
        match format {
            Some(f) if weight.device().is_cpu() && !weight.is_variable() => {
                let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
                Ok(Self::dense(
                    Arc::new(Dense::from_tensor(&weight, f)?),
                    bias,
                    layer,
                    proj,
                ))
            }
            _ => Self::from_weight(weight, bias, layer, proj),
        }
    }

    /// A projection over a dense weight.
    pub(crate) fn dense(d: Arc<Dense>, bias: Option<Tensor>, layer: usize, proj: Proj) -> Self {
        let (out, inp) = d.dims();
        LoraLinear {
            base: BaseWeight::Dense(d),
            bias,
            out,
            inp,
            layer,
            proj,
        }
    }

    /// A projection of the tensor `weight` `[out, in]`; a frozen weight is laid out
    /// transposed.
    pub(crate) fn from_weight(
        weight: Tensor,
        bias: Option<Tensor>,
        layer: usize,
        proj: Proj,
    ) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        let (weight, wt) = if weight.is_variable() {
            (weight, None)
        } else {
            let wt = weight.t()?.contiguous()?;
            (wt.t()?, Some(wt))
        };
        Ok(LoraLinear {
            base: BaseWeight::Tensor { weight, wt },
            bias,
            out,
            inp,
            layer,
            proj,
        })
    }

    /// `W` `[out, in]` (for a dense weight: its values as f32, a copy).
    pub(crate) fn weight(&self) -> Result<Tensor> {
        match &self.base {
            BaseWeight::Tensor { weight, .. } => Ok(weight.clone()),
            BaseWeight::Dense(d) => d.to_tensor(&candle_core::Device::Cpu),
        }
    }

    /// Bytes of the base weight in memory.
    pub(crate) fn weight_bytes(&self) -> usize {
        match &self.base {
            BaseWeight::Tensor { weight, .. } => {
                weight.elem_count() * weight.dtype().size_in_bytes()
            }
            BaseWeight::Dense(d) => d.bytes(),
        }
    }

    /// `x·Wᵀ` `[rows, in]` → `[rows, out]`, without bias or adapters.
    fn base_matmul(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.base {
            BaseWeight::Dense(d) if x.device().is_cpu() && x.dtype() == DType::F32 => x
                .contiguous()?
                .apply_op1_arc(Arc::new(Box::new(DenseOp(d.clone()))))?,
            BaseWeight::Dense(d) => {
                x.matmul(&d.to_tensor(x.device())?.to_dtype(x.dtype())?.t()?)?
            }
            BaseWeight::Tensor { wt: Some(wt), .. } => x.matmul(wt)?,
            BaseWeight::Tensor { weight, .. } => x.matmul(&weight.t()?)?,
        })
    }

    /// x: [rows, in] → [rows, out].
    pub(crate) fn forward(&self, x: &Tensor, plan: &RowPlan) -> Result<Tensor> {
        let timer = profile::time(Phase::BaseMatmul);
        let mut y = self.base_matmul(x)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        drop(timer);
        let _t = profile::time(Phase::Lora);
        match plan {
            RowPlan::Base => Ok(y),
            RowPlan::Whole(adapter) => match adapter.pair(self.layer, self.proj) {
                None => Ok(y),
                // a serving adapter: the per-row kernel, as when it shares a batch (fewer ops
                // than two matmuls, and a row's result the same alone or batched)
                Some(pair)
                    if pair.packed().is_some()
                        && self.bgmv_cpu_add(x, &[Some(pair)], &vec![1; x.dim(0)?], &y)? =>
                {
                    Ok(y)
                }
                Some(pair) => {
                    // shrink to rank r, then expand (in the activations' dtype)
                    let dt = x.dtype();
                    let (a, b) = (pair.a.to_dtype(dt)?, pair.b.to_dtype(dt)?);
                    let d = (x.matmul(&a.t()?)?.matmul(&b.t()?)? * pair.scale)?;
                    Ok((y + d)?)
                }
            },
            RowPlan::Rows {
                adapters,
                row_slot,
                slots,
            } => {
                let pairs: Vec<Option<&LoraPair>> = adapters
                    .iter()
                    .map(|a| a.pair(self.layer, self.proj))
                    .collect();
                if pairs.iter().all(Option::is_none) {
                    return Ok(y);
                }
                if self.bgmv_cpu_add(x, &pairs, row_slot, &y)? {
                    return Ok(y);
                }
                let d = self.bgmv_gathered(x, &pairs, slots)?;
                Ok((y + d)?)
            }
        }
    }

    /// [`rows_cpu_add`] for this projection.
    fn bgmv_cpu_add(
        &self,
        x: &Tensor,
        pairs: &[Option<&LoraPair>],
        row_slot: &[u32],
        y: &Tensor,
    ) -> Result<bool> {
        rows_cpu_add(x, pairs, row_slot, y, (self.inp, self.out))
    }

    /// [`rows_gathered`] for this projection.
    fn bgmv_gathered(
        &self,
        x: &Tensor,
        pairs: &[Option<&LoraPair>],
        slots: &Tensor,
    ) -> Result<Tensor> {
        rows_gathered(x, pairs, slots, (self.inp, self.out))
    }

    /// W + s·B·A (computed in f32; a dense weight is stored again in its format).
    pub(crate) fn merged(&self, adapter: &LoraAdapter) -> Result<Self> {
        let Some(pair) = adapter.pair(self.layer, self.proj) else {
            return Ok(self.clone());
        };
        let f = candle_core::DType::F32;
        let (a, b) = (pair.a.to_dtype(f)?, pair.b.to_dtype(f)?);
        match &self.base {
            BaseWeight::Dense(d) => {
                let delta = (b.matmul(&a)? * pair.scale)?.to_device(&candle_core::Device::Cpu)?;
                let w = (d.to_tensor(&candle_core::Device::Cpu)? + delta)?;
                let d = Dense::from_tensor(&w, d.format())?;
                Ok(Self::dense(
                    Arc::new(d),
                    self.bias.clone(),
                    self.layer,
                    self.proj,
                ))
            }
            // Wᵀ + (s·B·A)ᵀ = Wᵀ + s·Aᵀ·Bᵀ: merged in the transposed layout, no copy to turn
            BaseWeight::Tensor { wt: Some(wt), .. } => {
                let dt = wt.dtype();
                let delta_t = (a.t()?.matmul(&b.t()?)? * pair.scale)?;
                let wt = (wt.to_dtype(f)? + delta_t)?.to_dtype(dt)?.contiguous()?;
                Ok(LoraLinear {
                    base: BaseWeight::Tensor {
                        weight: wt.t()?,
                        wt: Some(wt),
                    },
                    ..self.clone()
                })
            }
            BaseWeight::Tensor { weight, wt: None } => {
                let dt = weight.dtype();
                let delta = (b.matmul(&a)? * pair.scale)?;
                let weight = (weight.to_dtype(f)? + delta)?.to_dtype(dt)?;
                Self::from_weight(weight, self.bias.clone(), self.layer, self.proj)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::LoraConfig;
    use crate::routing::BatchAdapters;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .unwrap_or(f32::INFINITY)
    }

    /// A one-layer Llama config small enough for exact checks.
    fn tiny_config() -> Result<crate::Config> {
        crate::Config::from_json(
            r#"{"model_type":"llama","hidden_size":24,"intermediate_size":40,"num_hidden_layers":1,
            "num_attention_heads":2,"vocab_size":10,"max_position_embeddings":64}"#,
        )
    }

    #[test]
    fn a_frozen_weight_is_held_once_transposed_and_a_variable_is_read_live() -> Result<()> {
        let cfg = tiny_config()?;
        let dev = Device::Cpu;
        let (out, inp) = Proj::Up.dims(&cfg);
        let w = Tensor::randn(0f32, 1.0, (out, inp), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (5, inp), &dev)?;
        let want = x.matmul(&w.t()?.contiguous()?)?;
        // frozen: Wᵀ contiguous, and `weight` a view of that same storage
        let lin = LoraLinear::from_weight(w.copy()?, None, 0, Proj::Up)?;
        let BaseWeight::Tensor {
            weight,
            wt: Some(wt),
        } = &lin.base
        else {
            panic!("a frozen weight is transposed");
        };
        assert!(wt.is_contiguous() && wt.dims() == [inp, out]);
        assert!(
            !weight.is_contiguous(),
            "weight is the view, not a second copy"
        );
        assert_eq!(max_diff(weight, &w), 0.0);
        assert!(max_diff(&lin.forward(&x, &RowPlan::Base)?, &want) < 1e-5);
        // merged in the transposed layout: W + s·B·A, and the same outputs as unmerged
        let vm = candle_nn::VarMap::new();
        let lc = LoraConfig::new(4, 8.0, &[Proj::Up]);
        let mut t =
            LoraAdapter::trainable(lc.clone(), &cfg, &vm, &dev, DType::F32, 9)?.named_tensors();
        for (k, v) in t.iter_mut() {
            if k.contains("lora_B") {
                *v = Tensor::randn(0f32, 0.5, v.shape(), &dev)?;
            }
        }
        let adapter = LoraAdapter::from_tensors(lc, &cfg, t, &dev, DType::F32)?;
        let pair = adapter.pair(0, Proj::Up).expect("up_proj is targeted");
        let merged = lin.merged(&adapter)?;
        assert!(
            matches!(&merged.base, BaseWeight::Tensor { wt: Some(t), .. } if t.is_contiguous())
        );
        let delta = (pair.b.matmul(&pair.a)? * pair.scale)?;
        assert!(max_diff(&merged.weight()?, &(&w + &delta)?) < 1e-5);
        // a dense weight merges the same way, in its own format
        let dense = LoraLinear::dense(
            Arc::new(Dense::from_tensor(&w, WeightFormat::F32)?),
            None,
            0,
            Proj::Up,
        );
        let dm = dense.merged(&adapter)?;
        assert!(matches!(dm.base, BaseWeight::Dense(_)));
        assert!(max_diff(&dm.weight()?, &(&w + delta)?) < 1e-5);
        assert!(
            max_diff(
                &dm.forward(&x, &RowPlan::Base)?,
                &merged.forward(&x, &RowPlan::Base)?
            ) < 1e-4
        );
        let unmerged = lin.forward(&x, &RowPlan::Whole(Arc::new(adapter.clone())))?;
        assert!(max_diff(&merged.forward(&x, &RowPlan::Base)?, &unmerged) < 1e-4);
        // a variable (a base model being trained) is not copied: a step of the optimiser shows
        let var = candle_core::Var::from_tensor(&w)?;
        let trained = LoraLinear::from_weight(var.as_tensor().clone(), None, 0, Proj::Up)?;
        assert!(matches!(trained.base, BaseWeight::Tensor { wt: None, .. }));
        var.set(&(&w * 2.0)?)?;
        let d = max_diff(&trained.forward(&x, &RowPlan::Base)?, &(&want * 2.0)?);
        assert!(d < 1e-4, "the forward reads the variable as it is now: {d}");
        Ok(())
    }

    #[test]
    fn per_row_kernels_equal_per_row_matmuls_with_mixed_ranks() -> Result<()> {
        let cfg = tiny_config()?;
        let dev = Device::Cpu;
        let adapter = |r: usize, targets: &[Proj], seed: u64| -> Result<Arc<LoraAdapter>> {
            let vm = candle_nn::VarMap::new();
            let lc = LoraConfig::new(r, 2.0 * r as f64, targets);
            let a = LoraAdapter::trainable(lc, &cfg, &vm, &dev, DType::F32, seed)?;
            let mut t = a.named_tensors();
            for (k, v) in t.iter_mut() {
                if k.contains("lora_B") {
                    *v = Tensor::randn(0f32, 0.5, v.shape(), &dev)?;
                }
            }
            let mut a = LoraAdapter::from_tensors(a.config().clone(), &cfg, t, &dev, DType::F32)?;
            a.prepare_serving()?;
            Ok(Arc::new(a))
        };
        // ranks 8, 3 and 5; the third leaves down_proj alone; the fourth holds training
        // variables (no packed copy: the kernel reads their f32 A and B)
        let vars = {
            let mut t = adapter(6, &Proj::ALL, 4)?.named_tensors();
            for v in t.values_mut() {
                *v = candle_core::Var::from_tensor(v)?.as_tensor().clone();
            }
            let lc = LoraConfig::new(6, 12.0, &Proj::ALL);
            Arc::new(LoraAdapter::from_tensors(lc, &cfg, t, &dev, DType::F32)?)
        };
        let adapters = vec![
            adapter(8, &Proj::ALL, 1)?,
            adapter(3, &Proj::ALL, 2)?,
            adapter(5, &[Proj::Q, Proj::Up], 3)?,
            vars,
        ];
        let per_seq = vec![Some(0), None, Some(1), Some(2), Some(0), Some(1), Some(3)];
        let rows = [5, 1, 1, 7, 1, 3, 2]; // prefill chunks and decode rows mixed
        let plan = BatchAdapters::new(adapters.clone(), per_seq.clone())?.plan(&rows, &dev)?;
        let RowPlan::Rows {
            row_slot, slots, ..
        } = &plan
        else {
            panic!("a mixed batch must plan per-row adapters");
        };
        let n: usize = rows.iter().sum();
        for proj in [Proj::Up, Proj::Down] {
            let (out, inp) = proj.dims(&cfg);
            let lin = LoraLinear::from_weight(
                Tensor::randn(0f32, 1.0, (out, inp), &dev)?,
                None,
                0,
                proj,
            )?;
            let x = Tensor::randn(0f32, 1.0, (n, inp), &dev)?;
            let pairs: Vec<_> = adapters.iter().map(|a| a.pair(0, proj)).collect();
            let cpu = Tensor::zeros((n, out), DType::F32, &dev)?;
            assert!(
                lin.bgmv_cpu_add(&x, &pairs, row_slot, &cpu)?,
                "cpu f32 path"
            );
            let kept: Vec<bool> = pairs
                .iter()
                .flatten()
                .map(|p| p.packed().is_some())
                .collect();
            assert_eq!(
                kept.last(),
                Some(&false),
                "no packed copy of training variables"
            );
            assert!(kept[..kept.len() - 1].iter().all(|&k| k));
            let gathered = lin.bgmv_gathered(&x, &pairs, slots)?;
            // reference: each sequence's rows alone through plain matmuls
            let mut start = 0;
            for (s, &len) in rows.iter().enumerate() {
                let xs = x.narrow(0, start, len)?;
                let want = match per_seq[s].and_then(|k| adapters[k].pair(0, proj)) {
                    Some(p) => {
                        let (a, b) = (p.a.to_dtype(DType::F32)?, p.b.to_dtype(DType::F32)?);
                        (xs.matmul(&a.t()?)?.matmul(&b.t()?)? * p.scale)?
                    }
                    None => Tensor::zeros((len, out), DType::F32, &dev)?,
                };
                for got in [&cpu, &gathered] {
                    let d = max_diff(&got.narrow(0, start, len)?, &want);
                    assert!(d < 1e-4, "{proj:?} seq {s}: diff {d}");
                }
                start += len;
            }
            let plain = lin.forward(&x, &plan)?;
            let d = max_diff(&(plain - x.matmul(&lin.weight()?.t()?)?)?, &cpu);
            assert!(d < 1e-4, "forward adds the per-row delta: {d}");
        }
        Ok(())
    }
}
