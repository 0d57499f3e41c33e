//! The OpenAI-compatible HTTP API.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/models` | the base model and every adapter, with `servable` (a load check, [`crate::check`]) and a reason when not |
//! | `POST /v1/completions` | text completion (`stream: true` for SSE) |
//! | `POST /v1/chat/completions` | chat with the base model's chat template |
//! | `POST /v1/load_lora_adapter` | vLLM-style: `{"lora_name", "lora_path", "adapter_hash"?}` (admin) |
//! | `POST /v1/unload_lora_adapter` | vLLM-style: `{"lora_name"}` (admin) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /health` | `ok` |
//!
//! Extensions: `"adapters": [{"id", "weight"}]` merges adapters linearly for one request
//! (`model` is then the base model's name); every completion carries `attribution`.

use alloy_primitives::B256;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openledger_model::{ChatMessage, FinishReason, LoraAdapter, SamplingParams};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::{Event, Finished, Job};
use crate::error::ServeError;
use crate::hooks::{Charge, CompletedInference, MixPart, PendingInference, ServedModel};
use crate::mix::{linear_mix, mix_key};
use crate::registry::{Directory, Resolved};
use crate::server::{AppState, load_local};

pub(crate) fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/load_lora_adapter", post(load_adapter))
        .route("/v1/unload_lora_adapter", post(unload_adapter))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async {
            ServeError::ModelNotFound("(no such route)".into()).into_response_404()
        })
        .with_state(st)
}

impl ServeError {
    fn into_response_404(self) -> Response {
        let body = json!({"error": {"message": "no such route", "type": "invalid_request_error", "code": "unknown_route", "param": null}});
        (StatusCode::NOT_FOUND, Json(body)).into_response()
    }
}

// ------------------------------------------------------------------ request shapes

#[derive(Deserialize)]
struct AdapterWeight {
    id: String,
    weight: f32,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StopSpec {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PromptSpec {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ContentSpec {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<ContentSpec>,
}

#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<StopSpec>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    adapters: Option<Vec<AdapterWeight>>,
    /// vLLM's extension: do not stop at the end-of-sequence token.
    #[serde(default)]
    ignore_eos: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

/// What to serve with.
enum AdapterPlan {
    None,
    One { name: String, hash: B256 },
    Mix(Vec<(String, MixPart)>),
}

/// A request that passed every check: only this goes further.
struct ValidRequest {
    id: String,
    kind: Kind,
    served: ServedModel,
    plan: AdapterPlan,
    prompt_text: String,
    prompt: Vec<u32>,
    params: SamplingParams,
    stream: bool,
}

fn parse_json(body: &Bytes) -> Result<Value, ServeError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ServeError::MalformedJson(e.to_string()))?;
    if !v.is_object() {
        return Err(ServeError::MalformedJson(
            "the body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ServeError> {
    serde_json::from_value(v).map_err(|e| ServeError::MalformedJson(e.to_string()))
}

impl AppState {
    fn validate(&self, kind: Kind, body: &Bytes) -> Result<ValidRequest, ServeError> {
        let v = parse_json(body)?;
        let c: Common = typed(v.clone())?;
        let (base_name, base_hash) = {
            let d = self.dir.read();
            (d.base_name.clone(), d.base_hash)
        };
        // model and adapters
        let resolved = self.dir.read().resolve(&c.model)?;
        let plan = match (&c.adapters, resolved) {
            (Some(list), Resolved::Base) => {
                if list.is_empty() || list.len() > 8 {
                    return Err(ServeError::param("adapters", "give 1 to 8 adapters"));
                }
                let mut mix = Vec::new();
                for a in list {
                    if !a.weight.is_finite() {
                        return Err(ServeError::param(
                            "adapters",
                            format!("weight of '{}' is not a finite number", a.id),
                        ));
                    }
                    match self.dir.read().resolve(&a.id)? {
                        Resolved::Adapter {
                            hash,
                            model_id,
                            unregistered,
                        } => mix.push((
                            a.id.clone(),
                            MixPart {
                                adapter_hash: hash,
                                weight: a.weight,
                                model_id,
                                unregistered,
                            },
                        )),
                        Resolved::Base => {
                            return Err(ServeError::param(
                                "adapters",
                                format!("'{}' is the base model, not an adapter", a.id),
                            ));
                        }
                    }
                }
                AdapterPlan::Mix(mix)
            }
            (Some(_), Resolved::Adapter { .. }) => {
                return Err(ServeError::param(
                    "model",
                    format!("with 'adapters', 'model' must be the base model '{base_name}'"),
                ));
            }
            (None, Resolved::Base) => AdapterPlan::None,
            (None, Resolved::Adapter { hash, .. }) => AdapterPlan::One {
                name: c.model.clone(),
                hash,
            },
        };
        let (model_id, unregistered) = match self.dir.read().resolve(&c.model)? {
            Resolved::Adapter {
                model_id,
                unregistered,
                ..
            } => (model_id, unregistered),
            Resolved::Base => (None, false),
        };
        let served = ServedModel {
            name: c.model.clone(),
            model_id,
            adapter_hash: match &plan {
                AdapterPlan::One { hash, .. } => Some(*hash),
                _ => None,
            },
            base_model_hash: base_hash,
            mix: match &plan {
                AdapterPlan::Mix(m) => m.iter().map(|(_, p)| p.clone()).collect(),
                _ => Vec::new(),
            },
            unregistered,
        };
        // sampling values
        if let Some(n) = c.n
            && n != 1
        {
            return Err(ServeError::param("n", "only n = 1 is supported"));
        }
        let temperature = c.temperature.unwrap_or(1.0);
        if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
            return Err(ServeError::param(
                "temperature",
                format!("{temperature} is not in [0, 2]"),
            ));
        }
        let top_p = c.top_p.unwrap_or(1.0);
        if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
            return Err(ServeError::param(
                "top_p",
                format!("{top_p} is not in (0, 1]"),
            ));
        }
        let stop = match c.stop {
            None => Vec::new(),
            Some(StopSpec::One(s)) => vec![s],
            Some(StopSpec::Many(v)) => v,
        };
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(ServeError::param(
                "stop",
                "give at most 4 non-empty stop strings",
            ));
        }
        // prompt
        let (prompt_text, prompt) = match kind {
            Kind::Completion => {
                let p: Value = v.get("prompt").cloned().unwrap_or(Value::Null);
                if p.is_null() {
                    return Err(ServeError::param("prompt", "a prompt is required"));
                }
                match typed::<PromptSpec>(p).map_err(|_| {
                    ServeError::param(
                        "prompt",
                        "a string, a list of one string, or a list of token ids",
                    )
                })? {
                    PromptSpec::Text(t) => (t.clone(), self.encode(&t)?),
                    PromptSpec::Texts(ts) if ts.len() == 1 => (ts[0].clone(), self.encode(&ts[0])?),
                    PromptSpec::Texts(_) => {
                        return Err(ServeError::param("prompt", "only one prompt per request"));
                    }
                    PromptSpec::Tokens(ids) => {
                        let vocab = self.base.config.vocab_size;
                        if ids.is_empty() || ids.iter().any(|&t| t as usize >= vocab) {
                            return Err(ServeError::param(
                                "prompt",
                                format!("token ids must be non-empty and < {vocab}"),
                            ));
                        }
                        let text = self
                            .base
                            .tokenizer
                            .as_ref()
                            .and_then(|t| t.decode(&ids, false).ok())
                            .unwrap_or_default();
                        (text, ids)
                    }
                }
            }
            Kind::Chat => {
                let msgs = v.get("messages").cloned().unwrap_or(Value::Null);
                let msgs: Vec<Message> = typed(msgs).map_err(|_| {
                    ServeError::param("messages", "a list of {role, content} messages is required")
                })?;
                if msgs.is_empty() {
                    return Err(ServeError::param(
                        "messages",
                        "at least one message is required",
                    ));
                }
                let mut chat = Vec::with_capacity(msgs.len());
                for m in msgs {
                    if !matches!(
                        m.role.as_str(),
                        "system" | "user" | "assistant" | "developer"
                    ) {
                        return Err(ServeError::param(
                            "messages",
                            format!("unknown role '{}'", m.role),
                        ));
                    }
                    let content = match m.content {
                        None => String::new(),
                        Some(ContentSpec::Text(t)) => t,
                        Some(ContentSpec::Parts(ps)) => {
                            if ps.iter().any(|p| p.kind != "text") {
                                return Err(ServeError::param(
                                    "messages",
                                    "only text content parts are supported",
                                ));
                            }
                            ps.into_iter()
                                .filter_map(|p| p.text)
                                .collect::<Vec<_>>()
                                .join("")
                        }
                    };
                    let role = if m.role == "developer" {
                        "system"
                    } else {
                        m.role.as_str()
                    };
                    chat.push(ChatMessage::new(role, &content));
                }
                let tpl = self.base.chat_template.as_ref().ok_or_else(|| {
                    ServeError::param(
                        "messages",
                        "the base model has no chat template; use /v1/completions",
                    )
                })?;
                let text = tpl
                    .render(&chat, true)
                    .map_err(|e| ServeError::param("messages", e.to_string()))?;
                let ids = self.encode(&text)?;
                (text, ids)
            }
        };
        let ctx = self.base.config.max_position_embeddings;
        if prompt.len() >= ctx {
            return Err(ServeError::ContextLength(format!(
                "the prompt is {} tokens; this model's context is {ctx} tokens (prompt + completion)",
                prompt.len()
            )));
        }
        let room = ctx - prompt.len();
        let asked = c.max_completion_tokens.or(c.max_tokens);
        let max_tokens = match asked {
            Some(m) if m < 1 => {
                return Err(ServeError::param(
                    "max_tokens",
                    format!("{m} is less than 1"),
                ));
            }
            Some(m) if m as u64 > self.cfg.max_tokens_limit as u64 => {
                return Err(ServeError::param(
                    "max_tokens",
                    format!(
                        "{m} is over this server's limit of {}",
                        self.cfg.max_tokens_limit
                    ),
                ));
            }
            Some(m) if m as usize > room => {
                return Err(ServeError::ContextLength(format!(
                    "the prompt ({} tokens) plus max_tokens ({m}) exceed this model's context of {ctx} tokens",
                    prompt.len()
                )));
            }
            Some(m) => m as usize,
            None => match kind {
                Kind::Completion => self.cfg.default_max_tokens.min(room),
                Kind::Chat => self.cfg.max_tokens_limit.min(room),
            },
        };
        let seed = match c.seed {
            Some(s) => s as u64,
            None => rand::random(),
        };
        let params = SamplingParams {
            max_new_tokens: max_tokens,
            temperature,
            top_k: None,
            top_p: (top_p < 1.0).then_some(top_p),
            repetition_penalty: 1.0,
            stop_strings: stop,
            stop_token_ids: if c.ignore_eos {
                Vec::new()
            } else {
                self.base.eos_ids()
            },
            seed,
        };
        let prefix = if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        };
        Ok(ValidRequest {
            id: format!("{prefix}-{:016x}", rand::random::<u64>()),
            kind,
            served,
            plan,
            prompt_text,
            prompt,
            params,
            stream: c.stream.unwrap_or(false),
        })
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ServeError> {
        self.base
            .encode(text)
            .map_err(|e| ServeError::param("prompt", e.to_string()))
    }

    /// The load check of every adapter of the plan ([`crate::check::Checker::gate`]).
    async fn gate(&self, plan: &AdapterPlan) -> Result<(), ServeError> {
        match plan {
            AdapterPlan::None => Ok(()),
            AdapterPlan::One { name, hash } => self.checker.gate(*hash, name).await,
            AdapterPlan::Mix(list) => {
                for (name, p) in list {
                    self.checker.gate(p.adapter_hash, name).await?;
                }
                Ok(())
            }
        }
    }

    /// Loads an adapter for a request; what the load found becomes its hash's verdict (a blob
    /// that vanished since its check is listed as such at once).
    async fn load(&self, hash: B256, name: &str) -> Result<Arc<LoraAdapter>, ServeError> {
        let r = self.cache.get(hash, name).await;
        if let Err(e) = &r {
            self.checker.record(hash, Err(e));
        }
        r.map(|(a, _)| a)
    }

    async fn adapter(
        &self,
        plan: &AdapterPlan,
    ) -> Result<(Option<Arc<LoraAdapter>>, B256), ServeError> {
        match plan {
            AdapterPlan::None => Ok((None, B256::ZERO)),
            AdapterPlan::One { name, hash } => Ok((Some(self.load(*hash, name).await?), *hash)),
            AdapterPlan::Mix(list) => {
                let mut parts = Vec::with_capacity(list.len());
                for (name, p) in list {
                    parts.push((self.load(p.adapter_hash, name).await?, p.weight));
                }
                let model = self.base.config.clone();
                let key = mix_key(
                    &list
                        .iter()
                        .map(|(_, p)| (p.adapter_hash, p.weight))
                        .collect::<Vec<_>>(),
                );
                let mixed = tokio::task::spawn_blocking(move || {
                    let mut mixed = linear_mix(&parts, &model)?;
                    mixed.prepare_serving()?;
                    Ok::<_, openledger_model::Error>(mixed)
                })
                .await
                .map_err(|e| ServeError::Internal(e.to_string()))?
                .map_err(|e| ServeError::AdapterRefused {
                    name: "adapters".into(),
                    reason: e.to_string(),
                })?;
                Ok((Some(Arc::new(mixed)), key))
            }
        }
    }
}

// ------------------------------------------------------------------ handlers

async fn completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    respond(
        &st,
        serve(st.clone(), headers, Kind::Completion, body).await,
    )
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&st, serve(st.clone(), headers, Kind::Chat, body).await)
}

fn respond(st: &AppState, r: Result<Response, ServeError>) -> Response {
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    st.metrics.count_status(resp.status().as_u16());
    resp
}

async fn serve(
    st: Arc<AppState>,
    headers: HeaderMap,
    kind: Kind,
    body: Bytes,
) -> Result<Response, ServeError> {
    let arrived = Instant::now();
    let req = match st.validate(kind, &body) {
        // A model registered since the last poll: catch up with the chain before saying it
        // does not exist (a client may chat the moment its registration is confirmed).
        Err(ServeError::ModelNotFound(name))
            if st.follower.is_some() && Directory::names_chain_id(&name) =>
        {
            if let Err(e) = st.sync_chain(Some(arrived)).await {
                tracing::warn!(target: "serve::registry", error = %e, "catching up for '{name}'");
                return Err(ServeError::ModelNotFound(name));
            }
            st.validate(kind, &body)?
        }
        r => r?,
    };
    // An adapter whose blob cannot be loaded is refused here, before a slot or `authorize`:
    // nothing is reserved or charged for it.
    st.gate(&req.plan).await?;
    let permit = st.engine.reserve()?;
    let pending = PendingInference {
        request_id: req.id.clone(),
        model: req.served.clone(),
        prompt_tokens: req.prompt.len(),
        max_completion_tokens: req.params.max_new_tokens,
    };
    let charge = st.hooks.authorize(&headers, &pending).await?;
    // From here on the request is accounted for whatever happens: see `Tracked`.
    let req = Arc::new(req);
    let mut tracked = Tracked::new(st.clone(), req.clone(), charge);
    let (adapter, key) = st.adapter(&req.plan).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tracked.rx = Some(rx);
    st.engine.submit(Job {
        id: st.engine.next_id(),
        key,
        adapter,
        prompt: req.prompt.clone(),
        params: req.params.clone(),
        events: tx,
        arrived,
        permit,
    })?;
    if req.stream {
        Ok(stream(tracked).into_response())
    } else {
        collect(tracked).await
    }
}

fn finish_reason(r: &FinishReason) -> &'static str {
    match r {
        FinishReason::Length => "length",
        FinishReason::StopToken(_) | FinishReason::StopString(_) => "stop",
    }
}

fn usage(f: &Finished) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion.len(),
        "total_tokens": f.prompt_tokens + f.completion.len(),
    })
}

/// An authorised request's events and what it owes. Whatever the client does, the hooks hear
/// about the request exactly once: [`InferenceHooks::completed`] with the whole answer, or —
/// when the client closes the stream or the connection first and this value is dropped — with
/// the tokens produced so far (nothing computed goes unpaid); [`InferenceHooks::abandoned`]
/// when no token was produced. The hook runs in its own task, so a client that leaves while
/// the record is being written cannot cancel it.
///
/// [`InferenceHooks::completed`]: crate::hooks::InferenceHooks::completed
/// [`InferenceHooks::abandoned`]: crate::hooks::InferenceHooks::abandoned
struct Tracked {
    st: Arc<AppState>,
    req: Arc<ValidRequest>,
    charge: Option<Charge>,
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<Event>>,
    tokens: Vec<u32>,
    text: String,
    reported: bool,
}

impl Tracked {
    fn new(st: Arc<AppState>, req: Arc<ValidRequest>, charge: Option<Charge>) -> Self {
        Self {
            st,
            req,
            charge,
            rx: None,
            tokens: Vec::new(),
            text: String::new(),
            reported: false,
        }
    }

    /// The next engine event (tokens are remembered for the charge).
    async fn next(&mut self) -> Option<Event> {
        let ev = self.rx.as_mut()?.recv().await;
        if let Some(Event::Token { id, text }) = &ev {
            self.tokens.push(*id);
            self.text.push_str(text);
        }
        ev
    }

    /// Reports the finished request to the hooks; resolves to the `attribution` value.
    fn complete(&mut self, tokens: Vec<u32>, text: String) -> tokio::task::JoinHandle<Value> {
        self.reported = true;
        let st = self.st.clone();
        let inf = CompletedInference {
            request_id: self.req.id.clone(),
            model: self.req.served.clone(),
            prompt_text: self.req.prompt_text.clone(),
            prompt_tokens: self.req.prompt.clone(),
            completion_text: text,
            completion_tokens: tokens,
            charge: self.charge.clone(),
        };
        tokio::spawn(async move { st.hooks.completed(inf).await })
    }

    /// The engine failed the request: nothing is owed.
    fn fail(&mut self) {
        self.reported = true;
        self.st.hooks.abandoned(&self.req.id);
    }

    async fn attribution(&mut self, f: &Finished) -> Value {
        self.complete(f.completion.clone(), f.text.clone())
            .await
            .unwrap_or_else(|e| json!({"error": format!("attribution task failed: {e}")}))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        // The client left: take what the engine already produced, then settle for it.
        let mut finished = None;
        if let Some(rx) = self.rx.as_mut() {
            while let Ok(ev) = rx.try_recv() {
                match ev {
                    Event::Token { id, text } => {
                        self.tokens.push(id);
                        self.text.push_str(&text);
                    }
                    Event::Done(f) => {
                        finished = Some(f);
                        break;
                    }
                    Event::Failed(_) => break,
                }
            }
        }
        let (tokens, text) = match finished {
            Some(f) => (f.completion, f.text),
            None => (
                std::mem::take(&mut self.tokens),
                std::mem::take(&mut self.text),
            ),
        };
        if tokens.is_empty() {
            self.fail();
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            tracing::info!(target: "serve::api", request = %self.req.id, tokens = tokens.len(), "client left; charging the tokens produced");
            drop(self.complete(tokens, text));
        }
    }
}

async fn collect(mut t: Tracked) -> Result<Response, ServeError> {
    let f = loop {
        match t.next().await {
            Some(Event::Token { .. }) => {}
            Some(Event::Done(f)) => break f,
            Some(Event::Failed(e)) => {
                t.fail();
                return Err(ServeError::Internal(e));
            }
            None => {
                t.fail();
                return Err(ServeError::ShuttingDown);
            }
        }
    };
    let attribution = t.attribution(&f).await;
    let req = &t.req;
    let created = now();
    let choice = match req.kind {
        Kind::Completion => {
            json!({"index": 0, "text": f.text, "logprobs": null, "finish_reason": finish_reason(&f.reason)})
        }
        Kind::Chat => {
            json!({"index": 0, "message": {"role": "assistant", "content": f.text}, "logprobs": null, "finish_reason": finish_reason(&f.reason)})
        }
    };
    let object = if req.kind == Kind::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    Ok(Json(json!({
        "id": req.id, "object": object, "created": created, "model": req.served.name,
        "choices": [choice], "usage": usage(&f), "attribution": attribution,
    }))
    .into_response())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

struct StreamState {
    t: Tracked,
    created: u64,
    started: bool,
    done: bool,
    pending: Option<SseEvent>,
}

impl StreamState {
    fn chunk(
        &self,
        text: Option<&str>,
        finish: Option<&str>,
        extra: Option<(Value, Value)>,
    ) -> Value {
        let req = &self.t.req;
        let choice = match req.kind {
            Kind::Completion => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
            Kind::Chat => {
                let delta = match (self.started, text) {
                    (false, t) => json!({"role": "assistant", "content": t.unwrap_or("")}),
                    (true, Some(t)) => json!({"content": t}),
                    (true, None) => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        let object = if req.kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut v = json!({"id": req.id, "object": object, "created": self.created, "model": req.served.name, "choices": [choice]});
        if let Some((usage, attribution)) = extra {
            v["usage"] = usage;
            v["attribution"] = attribution;
        }
        v
    }
}

fn stream(t: Tracked) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let state = StreamState {
        t,
        created: now(),
        started: false,
        done: false,
        pending: None,
    };
    let s = futures::stream::unfold(state, |mut s| async move {
        if let Some(ev) = s.pending.take() {
            return Some((Ok(ev), s));
        }
        if s.done {
            return None;
        }
        loop {
            let ev = match s.t.next().await {
                Some(Event::Token { text, .. }) if text.is_empty() => continue,
                Some(Event::Token { text, .. }) => {
                    SseEvent::default().data(s.chunk(Some(&text), None, None).to_string())
                }
                Some(Event::Done(f)) => {
                    let attribution = s.t.attribution(&f).await;
                    let last = s.chunk(
                        None,
                        Some(finish_reason(&f.reason)),
                        Some((usage(&f), attribution)),
                    );
                    s.done = true;
                    s.pending = Some(SseEvent::default().data("[DONE]"));
                    SseEvent::default().data(last.to_string())
                }
                Some(Event::Failed(e)) => {
                    s.t.fail();
                    s.done = true;
                    SseEvent::default().data(ServeError::Internal(e).body().to_string())
                }
                None => {
                    s.t.fail();
                    return None;
                }
            };
            s.started = true;
            return Some((Ok(ev), s));
        }
    });
    Sse::new(s)
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    // verdicts past their recheck interval (a blob that may have arrived) are looked at again
    // in the background; this listing shows what is known now
    st.checker.spawn_due();
    let d = st.dir.read();
    let mut data = vec![json!({
        "id": d.base_name, "object": "model", "created": st.created, "owned_by": "openledger",
        "root": d.base_name, "parent": null, "servable": true, "base_model_hash": d.base_hash,
        "context_length": st.base.config.max_position_embeddings,
    })];
    for e in d.entries() {
        let reason = d.unservable_reason(e);
        let mut m = json!({
            "id": e.name, "object": "model", "created": st.created, "owned_by": match &e.origin {
                crate::registry::Origin::Chain { owner, .. } => owner.to_string(),
                crate::registry::Origin::Local { .. } => "local".to_string(),
            },
            "root": e.adapter_hash, "parent": d.base_name, "servable": reason.is_none(),
            "adapter_hash": e.adapter_hash, "model_id": e.model_id,
        });
        if let Some(r) = reason {
            m["reason"] = json!(r);
        }
        data.push(m);
    }
    Json(json!({"object": "list", "data": data}))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

fn check_admin(st: &AppState, headers: &HeaderMap) -> Result<(), ServeError> {
    let Some(token) = &st.cfg.admin_token else {
        return Err(ServeError::Unauthorized(
            "admin endpoints are disabled (no admin token configured)".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(token.as_str()) {
        return Err(ServeError::Unauthorized(
            "admin endpoint: missing or wrong bearer token".into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct LoadBody {
    lora_name: String,
    lora_path: String,
    #[serde(default)]
    adapter_hash: Option<B256>,
}

#[derive(Deserialize)]
struct UnloadBody {
    lora_name: String,
}

async fn load_adapter(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        check_admin(&st, &headers)?;
        let b: LoadBody = typed(parse_json(&body)?)?;
        let hash = load_local(
            &st,
            &b.lora_name,
            std::path::Path::new(&b.lora_path),
            b.adapter_hash,
        )
        .await?;
        Ok::<_, ServeError>(format!(
            "Success: LoRA adapter '{}' added successfully ({hash}).",
            b.lora_name
        ))
    }
    .await;
    r.map(IntoResponse::into_response)
        .unwrap_or_else(IntoResponse::into_response)
}

async fn unload_adapter(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        check_admin(&st, &headers)?;
        let b: UnloadBody = typed(parse_json(&body)?)?;
        let hash = st
            .dir
            .write()
            .remove_local(&b.lora_name)
            .ok_or_else(|| ServeError::ModelNotFound(b.lora_name.clone()))?;
        // requests in flight keep their pinned Arc; the cache only forgets it
        st.cache.evict_ram(&hash);
        Ok::<_, ServeError>(format!(
            "Success: LoRA adapter '{}' removed successfully.",
            b.lora_name
        ))
    }
    .await;
    r.map(IntoResponse::into_response)
        .unwrap_or_else(IntoResponse::into_response)
}
