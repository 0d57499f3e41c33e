//! Per-client limits on the HTTP origin: a request rate (token bucket), requests in flight, and
//! a deadline per request. A client over its rate or its in-flight count gets `429` with a
//! `Retry-After` header (seconds); a request that takes longer than the deadline gets `408`.
//! Clients are told apart by their IP address (all of loopback is one client).
//!
//! ```text
//! bucket per IP: `burst` tokens, refilled at `requests_per_second`; one request takes one token
//! in flight per IP: at most `max_in_flight` requests whose response is not yet produced
//! deadline: `request_timeout` from the request's arrival to its response head (a streamed
//!           body — SSE, a WebSocket — runs on after its head and is not cut)
//! ```

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use openledger_protocol::ApiError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The limits, per client IP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HttpLimits {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Requests whose response is not produced yet.
    pub max_in_flight: u32,
    /// From a request's arrival to its response head.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    /// Generous enough for a browser, an SDK and the test suites on one machine (one loopback
    /// client), tight enough that one client cannot monopolise the process.
    fn default() -> Self {
        Self {
            requests_per_second: 200.0,
            burst: 400,
            max_in_flight: 64,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Clients remembered at most; idle ones are forgotten first.
const MAX_CLIENTS: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Client {
    tokens: f64,
    refilled: Instant,
    in_flight: u32,
}

/// The shared state of the limiter (cheap to clone).
#[derive(Clone, Debug)]
pub struct Limiter {
    limits: HttpLimits,
    clients: Arc<Mutex<HashMap<IpAddr, Client>>>,
}

/// Why a request was turned away.
#[derive(Debug, PartialEq)]
enum Refusal {
    Rate { retry_after: Duration },
    InFlight,
}

impl Limiter {
    /// A limiter with `limits`.
    pub fn new(limits: HttpLimits) -> Self {
        Self {
            limits,
            clients: Default::default(),
        }
    }

    /// Takes a token and an in-flight slot for `ip` at `now`, or says why not.
    fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let l = &self.limits;
        let mut clients = self.clients.lock();
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&ip) {
            let burst = f64::from(l.burst);
            clients.retain(|_, c| c.in_flight > 0 || c.tokens < burst);
        }
        let c = clients.entry(ip).or_insert(Client {
            tokens: f64::from(l.burst),
            refilled: now,
            in_flight: 0,
        });
        let elapsed = now.saturating_duration_since(c.refilled).as_secs_f64();
        c.tokens = (c.tokens + elapsed * l.requests_per_second).min(f64::from(l.burst));
        c.refilled = now;
        if c.in_flight >= l.max_in_flight {
            return Err(Refusal::InFlight);
        }
        if c.tokens < 1.0 {
            let wait = (1.0 - c.tokens) / l.requests_per_second.max(f64::MIN_POSITIVE);
            return Err(Refusal::Rate {
                retry_after: Duration::from_secs_f64(wait.min(3600.0)),
            });
        }
        c.tokens -= 1.0;
        c.in_flight += 1;
        Ok(())
    }

    fn release(&self, ip: IpAddr) {
        if let Some(c) = self.clients.lock().get_mut(&ip) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

/// Gives the in-flight slot back however the request ends (also when the client leaves).
struct Slot(Limiter, IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

fn error(
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
) -> Response {
    let mut e = ApiError::new(status, kind, message).with_code(kind);
    if let Some(secs) = retry_after {
        e = e.with_retry_after(secs);
    }
    e.into_response()
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn limit(
    axum::extract::State(limiter): axum::extract::State<Limiter>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match limiter.admit(ip, Instant::now()) {
        Ok(()) => {}
        Err(Refusal::Rate { retry_after }) => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "more than {} requests per second (burst {}) from {ip}; retry in {secs} s",
                    limiter.limits.requests_per_second, limiter.limits.burst
                ),
                Some(secs),
            );
        }
        Err(Refusal::InFlight) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests_in_flight",
                format!(
                    "{ip} already has {} requests in flight; retry when one has answered",
                    limiter.limits.max_in_flight
                ),
                Some(1),
            );
        }
    }
    let _slot = Slot(limiter.clone(), ip);
    let timeout = limiter.limits.request_timeout;
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than {} s and was stopped",
                timeout.as_secs_f64()
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: f64, burst: u32, in_flight: u32) -> HttpLimits {
        HttpLimits {
            requests_per_second: rps,
            burst,
            max_in_flight: in_flight,
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_tells_how_long_to_wait() {
        let l = Limiter::new(limits(2.0, 3, 100));
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.admit(ip, t0), Ok(()));
            l.release(ip);
        }
        match l.admit(ip, t0) {
            Err(Refusal::Rate { retry_after }) => {
                assert!(
                    (retry_after.as_secs_f64() - 0.5).abs() < 1e-9,
                    "{retry_after:?}"
                )
            }
            other => panic!("expected a rate refusal, got {other:?}"),
        }
        // half a second later one token is back, and only one
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.admit(ip, t1), Ok(()));
        assert!(matches!(l.admit(ip, t1), Err(Refusal::Rate { .. })));
        // another client is not affected
        assert_eq!(l.admit(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), t1), Ok(()));
    }

    /// A real socket, the middleware in front of a fast and a slow route.
    async fn serve(limits: HttpLimits) -> String {
        let app = axum::Router::new()
            .route("/fast", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Limiter::new(limits),
                limit,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        url
    }

    #[tokio::test]
    async fn a_flooding_client_gets_429_with_retry_after_and_a_slow_request_408() {
        let url = serve(HttpLimits {
            requests_per_second: 1.0,
            burst: 5,
            max_in_flight: 100,
            request_timeout: Duration::from_millis(300),
        })
        .await;
        let http = reqwest::Client::new();
        let mut ok = 0;
        let mut limited = Vec::new();
        for _ in 0..20 {
            let r = http.get(format!("{url}/fast")).send().await.expect("send");
            match r.status().as_u16() {
                200 => ok += 1,
                429 => limited.push(r),
                s => panic!("unexpected status {s}"),
            }
        }
        assert!(ok <= 6, "{ok} of 20 requests passed a burst of 5");
        assert!(limited.len() >= 14, "only {} refused", limited.len());
        let r = limited.remove(0);
        let retry: u64 = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["type"], "rate_limited");
        // after the wait, the client is served again
        tokio::time::sleep(Duration::from_secs(retry)).await;
        let started = Instant::now();
        let r = http.get(format!("{url}/slow")).send().await.expect("send");
        assert_eq!(r.status().as_u16(), 408);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_devnet_origin_throttles_a_flooding_client() {
        let devnet = crate::Devnet::start(crate::DevnetConfig {
            http_limits: HttpLimits {
                requests_per_second: 0.5,
                burst: 3,
                ..HttpLimits::default()
            },
            ..Default::default()
        })
        .await
        .expect("devnet");
        let url = devnet.http_url().expect("origin");
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let r = http
                .get(format!("{url}/api/datanets/info"))
                .send()
                .await
                .expect("send");
            statuses.push(r.status().as_u16());
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            5,
            "{statuses:?}"
        );
        devnet.shutdown().await;
    }

    #[test]
    fn in_flight_requests_are_capped_per_client_and_released() {
        let l = Limiter::new(limits(1000.0, 1000, 2));
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t = Instant::now();
        assert_eq!(l.admit(ip, t), Ok(()));
        assert_eq!(l.admit(ip, t), Ok(()));
        assert_eq!(l.admit(ip, t), Err(Refusal::InFlight));
        drop(Slot(l.clone(), ip));
        assert_eq!(l.admit(ip, t), Ok(()));
    }
}
