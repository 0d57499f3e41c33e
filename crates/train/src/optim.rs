//! AdamW with decoupled weight decay whose state can be saved and restored.
//!
//! The update is `candle_nn::AdamW`'s, op for op (a test checks bit equality), so a run is the
//! same whether or not it was checkpointed; the difference is that the moments and the step
//! count are reachable here, which `candle_nn::AdamW` keeps private.

use candle_core::{Tensor, Var};
use candle_nn::ParamsAdamW;

use crate::error::{Result, TrainError};

/// Optimizer state of one parameter.
#[derive(Debug)]
pub struct Slot {
    /// The parameter.
    pub var: Var,
    /// First moment.
    pub m: Tensor,
    /// Second moment.
    pub v: Tensor,
}

/// AdamW over a fixed, ordered list of parameters.
#[derive(Debug)]
pub struct AdamW {
    /// Parameters and moments, in a fixed order.
    pub slots: Vec<Slot>,
    /// Steps taken.
    pub step_t: usize,
    /// Hyper-parameters (the learning rate is set per step by the schedule).
    pub params: ParamsAdamW,
}

impl AdamW {
    /// Zero moments for every var.
    pub fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|var| {
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                Ok(Slot { var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            slots,
            step_t: 0,
            params,
        })
    }

    /// One update with `grads[i]` the gradient of `slots[i]` (None = no gradient, skipped).
    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        if grads.len() != self.slots.len() {
            return Err(TrainError::corrupt("optimizer", "gradient count mismatch"));
        }
        self.step_t += 1;
        let p = &self.params;
        let (lr, beta1, beta2) = (p.lr, p.beta1, p.beta2);
        let lr_lambda = lr * p.weight_decay;
        let scale_m = 1f64 / (1f64 - beta1.powi(self.step_t as i32));
        let scale_v = 1f64 / (1f64 - beta2.powi(self.step_t as i32));
        for (slot, g) in self.slots.iter_mut().zip(grads) {
            let Some(g) = g else { continue };
            let next_m = ((&slot.m * beta1)? + (g * (1.0 - beta1))?)?;
            let next_v = ((&slot.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let next_theta = (slot.var.as_tensor() * (1f64 - lr_lambda))?;
            let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let next_theta = (next_theta - (adjusted * lr)?)?;
            slot.m = next_m;
            slot.v = next_v;
            slot.var.set(&next_theta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::Optimizer;

    #[test]
    fn matches_candle_nn_adamw_bit_for_bit() -> Result<()> {
        let dev = Device::Cpu;
        let init = Tensor::randn(0f32, 1.0, (5, 7), &dev)?;
        let (a, b) = (Var::from_tensor(&init)?, Var::from_tensor(&init)?);
        let params = ParamsAdamW {
            lr: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut ours = AdamW::new(vec![a.clone()], params.clone())?;
        let mut theirs = candle_nn::AdamW::new(vec![b.clone()], params)?;
        let target = Tensor::randn(0f32, 1.0, (5, 7), &dev)?;
        for step in 0..6 {
            let lr = 0.01 / (1 + step) as f64;
            ours.params.lr = lr;
            theirs.set_learning_rate(lr);
            let la = (a.as_tensor() - &target)?.sqr()?.sum_all()?;
            let ga = la.backward()?;
            ours.step(&[ga.get(a.as_tensor()).cloned()])?;
            let lb = (b.as_tensor() - &target)?.sqr()?.sum_all()?;
            theirs.backward_step(&lb)?;
        }
        let (x, y) = (a.to_dtype(DType::F32)?.flatten_all()?, b.flatten_all()?);
        let (x, y): (Vec<f32>, Vec<f32>) = (x.to_vec1()?, y.to_vec1()?);
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()));
        assert_ne!(x, init.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}
