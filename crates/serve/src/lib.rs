//! OpenLoRA: one base model in memory, many LoRA adapters served from it, requests for
//! different adapters batched into one forward pass, behind an OpenAI-compatible API.
//!
//! Modules: [`hooks`] (what payment and attribution plug into).

pub mod hooks;
