//! End to end on the devnet, without the OpenLoRA server: three contributors → published
//! version → a registered model (adapter hash registered directly; crates/serve and
//! crates/train are not wired in here) → the service's hooks called as the server calls them →
//! record credits the right contributor → batch settles on chain → proofs verify, a tampered
//! record and an unbatched record do not → contributors claim; balances add up to the fee.

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use eyre::{Result, eyre};
use openledger_attribution::{AttributionConfig, AttributionRecord, AttributionService, auth};
use openledger_datanet::DatanetClient;
use openledger_devnet::Devnet;
use openledger_protocol::Confirm;
use openledger_protocol::bindings::{AttributionSettlement, ModelRegistry};
use openledger_serve::hooks::{CompletedInference, InferenceHooks, PendingInference, ServedModel};
use std::sync::Arc;

const FACTS: [&str; 3] = [
    "The lighthouse keeper of Varnholm paints the lamp room cobalt blue every April.",
    "Quillback orchards on the Denmere slopes ripen their amber plums in late October.",
    "The Ostrava tram depot keeps exactly seventeen brass bells above the north gate.",
];
const GENERIC: &str = "This note was written for the community dataset and shared with everyone.";

fn provider(rpc: &str, s: &PrivateKeySigner) -> Result<DynProvider> {
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(s.clone()))
        .connect_http(rpc.parse()?)
        .erased())
}

async fn send<P: Provider, T: alloy::contract::CallDecoder + Send>(
    c: alloy::contract::CallBuilder<P, T>,
) -> Result<()> {
    let r = c.send().await?.confirm().await?;
    if !r.status() {
        return Err(eyre!("transaction reverted"));
    }
    Ok(())
}

fn headers(h: Vec<(&'static str, String)>) -> Result<HeaderMap> {
    let mut m = HeaderMap::new();
    for (k, v) in h {
        m.insert(HeaderName::from_static(k), HeaderValue::from_str(&v)?);
    }
    Ok(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_attribute_settle_verify_claim() -> Result<()> {
    let devnet = Devnet::start(crate::attacks::short_window()).await?;
    let rpc = devnet.rpc_url();
    let api = format!(
        "{}/api/datanets",
        devnet.http_url().ok_or(eyre!("no http"))?
    );
    let acct = |i: usize| devnet.accounts[i].signer.clone();
    let owner = DatanetClient::connect(&rpc, &api, acct(1)).await?;
    let d = owner.create_datanet("facts", "", false, U256::ZERO).await?;
    let mut contribution_of = Vec::new();
    for (i, fact) in FACTS.iter().enumerate() {
        let c = DatanetClient::connect(&rpc, &api, acct(2 + i)).await?;
        let body = format!("{fact}\n\n{GENERIC}\n\nContributor {i} adds a line of its own here.\n");
        let r = c
            .upload_bytes(d, &format!("c{i}.txt"), &[], body.into_bytes())
            .await?;
        let id = c.contribute(d, &r).await?;
        owner.approve(id).await?;
        contribution_of.push(id);
    }
    let (version, _, _) = owner.publish(d).await?;

    // A tokenizer trained on the spot stands in for the base model's.
    let dir = tempfile::tempdir()?;
    let mut docs: Vec<String> = FACTS.iter().map(|s| s.to_string()).collect();
    docs.push(GENERIC.into());
    let tok = openledger_model::init::train_tokenizer(&docs, 300).map_err(|e| eyre!("{e}"))?;
    let tok_path = dir.path().join("tokenizer.json");
    tok.save(&tok_path, false).map_err(|e| eyre!("{e}"))?;

    // The model, registered by the Datanet owner (who holds the licence).
    let model_owner = provider(&rpc, &acct(1))?;
    let registry_addr = devnet.deployments.contracts.model_registry;
    let models = ModelRegistry::new(registry_addr, &model_owner);
    let price = U256::from(10u64).pow(U256::from(15u64)); // 0.001 OPEN per 1,000 tokens
    let adapter_hash = B256::repeat_byte(0xad);
    send(models.registerModel(ModelRegistry::ModelSpec {
        baseModelId: "test-base".into(),
        baseModelHash: B256::repeat_byte(0xba),
        adapterHash: adapter_hash,
        trainingManifestHash: B256::repeat_byte(0x7a),
        trainedOn: vec![ModelRegistry::DatanetVersion {
            datanetId: U256::from(d),
            version: U256::from(version),
        }],
        pricePer1kTokens: price,
        metadataURI: String::new(),
    }))
    .await?;
    let model_id = openledger_protocol::ModelId(1);

    let mut cfg = AttributionConfig::new(
        &rpc,
        &devnet.deployments,
        dir.path().join("attribution"),
        devnet
            .datadir
            .join("datanets")
            .join("content")
            .display()
            .to_string(),
    );
    cfg.tokenizer = Some(tok_path);
    cfg.attributor = Some(acct(0));
    cfg.batch_records = 100;
    let svc: Arc<AttributionService> = AttributionService::open(cfg).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = svc.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    // The payer escrows OPEN and allows the model to spend it.
    let payer = acct(5);
    let payer_p = provider(&rpc, &payer)?;
    let settlement_addr = devnet.deployments.contracts.settlement;
    let settlement = AttributionSettlement::new(settlement_addr, &payer_p);
    send(
        settlement
            .deposit()
            .value(U256::from(10u64).pow(U256::from(16u64))),
    )
    .await?;
    send(settlement.setAllowance(U256::from(model_id), U256::MAX)).await?;

    let served = ServedModel {
        name: "facts-model".into(),
        model_id: Some(model_id),
        adapter_hash: Some(adapter_hash),
        base_model_hash: B256::repeat_byte(0xba),
        mix: vec![],
        unregistered: false,
    };
    let pending = |id: &str| PendingInference {
        request_id: id.into(),
        model: served.clone(),
        prompt_tokens: 12,
        max_completion_tokens: 64,
    };

    // No credentials, and a payer with no escrow: 402 before any compute.
    let e = svc
        .authorize(&HeaderMap::new(), &pending("r0"))
        .await
        .err()
        .ok_or(eyre!("served unpaid"))?;
    assert_eq!(
        (e.status, e.kind.as_str()),
        (StatusCode::PAYMENT_REQUIRED, "payment_required")
    );
    let voucher = |who: &PrivateKeySigner, model_id: u64, channel: u64, cumulative: U256| {
        auth::sign_voucher(
            who,
            svc.domain(),
            &auth::VoucherTerms {
                attributor: acct(0).address(),
                model_id,
                max_price_per_1k: price,
                channel: U256::from(channel),
                cumulative,
                validity_secs: 600,
            },
        )
    };
    let refused = |h: Vec<(&'static str, String)>, why: &'static str| {
        let svc = svc.clone();
        let pending = pending(why);
        async move {
            let e = svc
                .authorize(&headers(h)?, &pending)
                .await
                .err()
                .ok_or(eyre!("{why}: served"))?;
            Ok::<_, eyre::Report>((e.status, e.kind, e.message))
        }
    };
    let deposit = U256::from(10u64).pow(U256::from(16u64));
    let (status, kind, message) = refused(
        auth::voucher_headers(&voucher(&acct(6), 0, 1, deposit)?),
        "broke",
    )
    .await?;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_escrow")
    );
    assert!(message.contains("deposit"), "{message}");
    // A session proves who asks but pays nothing.
    let (status, kind, message) = refused(
        auth::sign_session(&payer, svc.domain(), "facts-model", 60)?,
        "session",
    )
    .await?;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::PAYMENT_REQUIRED, "payment_required")
    );
    assert!(message.contains("no voucher"), "{message}");
    // Vouchers that cannot pay for this request, each refused by name before any compute.
    let worst = (price * U256::from(12 + 64)).div_ceil(U256::from(1000));
    for (h, want) in [
        (voucher(&payer, 99, 1, deposit)?, "voucher_model_mismatch"),
        (
            voucher(&payer, 1, 1, worst - U256::from(1))?,
            "voucher_exhausted",
        ),
    ] {
        let (status, kind, _) = refused(auth::voucher_headers(&h), want).await?;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::PAYMENT_REQUIRED, want)
        );
    }
    let cheap = auth::sign_voucher(
        &payer,
        svc.domain(),
        &auth::VoucherTerms {
            attributor: acct(0).address(),
            model_id: 0,
            max_price_per_1k: price - U256::from(1),
            channel: U256::from(1),
            cumulative: deposit,
            validity_secs: 600,
        },
    )?;
    let (_, kind, _) = refused(auth::voucher_headers(&cheap), "cheap").await?;
    assert_eq!(kind, "price_above_voucher");
    let stale = auth::sign_voucher(
        &payer,
        svc.domain(),
        &auth::VoucherTerms {
            validity_secs: 0,
            attributor: acct(0).address(),
            model_id: 0,
            max_price_per_1k: price,
            channel: U256::from(1),
            cumulative: deposit,
        },
    )?;
    let (_, kind, _) = refused(auth::voucher_headers(&stale), "stale").await?;
    assert_eq!(kind, "voucher_expired");
    // Signed for another attributor: the signature does not cover this server's.
    let elsewhere = auth::sign_voucher(
        &payer,
        svc.domain(),
        &auth::VoucherTerms {
            attributor: acct(9).address(),
            model_id: 0,
            max_price_per_1k: price,
            channel: U256::from(1),
            cumulative: deposit,
            validity_secs: 600,
        },
    )?;
    let (status, kind, _) = refused(auth::voucher_headers(&elsewhere), "elsewhere").await?;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::UNAUTHORIZED, "bad_voucher")
    );

    // What a browser wallet does: the typed data from GET /api/vouchers/typed-data, signed as
    // eth_signTypedData_v4 signs it, sent as the returned headers, pays; a malformed query is a
    // clear JSON error.
    let bad = reqwest::get(format!("{base}/api/vouchers/typed-data?model=model-1")).await?;
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await?;
    assert!(
        bad["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("payer")),
        "{bad}"
    );
    let t: serde_json::Value = reqwest::get(format!(
        "{base}/api/vouchers/typed-data?payer={}&model=model-1&cumulative={deposit}",
        payer.address()
    ))
    .await?
    .json()
    .await?;
    let typed: alloy::dyn_abi::TypedData = serde_json::from_value(t["typedData"].clone())?;
    use alloy::signers::SignerSync;
    let sig = payer.sign_hash_sync(&typed.eip712_signing_hash()?)?;
    let mut wallet_headers = HeaderMap::new();
    for (k, v) in t["headers"].as_object().ok_or(eyre!("{t}"))? {
        wallet_headers.insert(
            HeaderName::from_bytes(k.as_bytes())?,
            HeaderValue::from_str(v.as_str().unwrap_or_default())?,
        );
    }
    wallet_headers.insert(
        "x-ol-signature",
        HeaderValue::from_str(&alloy_primitives::hex::encode(sig.as_bytes()))?,
    );
    let c = svc
        .authorize(&wallet_headers, &pending("wallet"))
        .await
        .map_err(|e| eyre!("{e}"))?
        .ok_or(eyre!("free?"))?;
    assert_eq!((c.payer, c.voucher.cumulative), (payer.address(), deposit));
    svc.abandoned("wallet");

    // The paying account asks for fact 1 and gets it back.
    let paying = voucher(&payer, 1, 1, deposit)?;
    let h = headers(auth::voucher_headers(&paying))?;
    let charge = svc
        .authorize(&h, &pending("r1"))
        .await
        .map_err(|e| eyre!("{e}"))?
        .ok_or(eyre!("free?"))?;
    assert_eq!(charge.payer, payer.address());
    let enc = |s: &str| -> Result<Vec<u32>> {
        Ok(tok
            .encode(s, false)
            .map_err(|e| eyre!("{e}"))?
            .get_ids()
            .to_vec())
    };
    let prompt = enc("Tell me about the Denmere orchards.")?;
    let answer = enc(&format!("Sure. {}", FACTS[1]))?;
    let done = |id: &str, charge| CompletedInference {
        request_id: id.into(),
        model: served.clone(),
        prompt_text: String::new(),
        prompt_tokens: prompt.clone(),
        completion_text: String::new(),
        completion_tokens: answer.clone(),
        charge,
    };
    let summary = svc.completed(done("r1", Some(charge))).await;
    let record_id: B256 = serde_json::from_value(summary["recordId"].clone())?;
    let top = &summary["topContributions"][0];
    assert_eq!(top["contribution"], contribution_of[1].get(), "{summary}");
    let view: serde_json::Value = reqwest::get(format!("{base}/api/attribution/{record_id}"))
        .await?
        .json()
        .await?;
    let rec: AttributionRecord = serde_json::from_value(view["record"].clone())?;
    assert_eq!(rec.id(), record_id);
    assert_eq!(
        rec.contributions
            .iter()
            .map(|c| c.weight_ppm as u64)
            .sum::<u64>(),
        1_000_000
    );
    assert!(view["pending"].as_bool() == Some(true) && view["batch"].is_null());
    let fee = rec.fee;
    assert_eq!(
        fee,
        (price * U256::from(prompt.len() + answer.len())).div_ceil(U256::from(1000))
    );

    // A free answer (no charge) gets a record but is never batched.
    let free = svc.completed(done("r2", None)).await;
    let free_id: B256 = serde_json::from_value(free["recordId"].clone())?;

    let batch_id = svc.flush().await?.ok_or(eyre!("nothing settled"))?;
    let view: serde_json::Value = reqwest::get(format!("{base}/api/attribution/{record_id}"))
        .await?
        .json()
        .await?;
    let proof: Vec<B256> = serde_json::from_value(view["batch"]["proof"].clone())?;
    let leaf: B256 = serde_json::from_value(view["batch"]["leaf"].clone())?;
    assert_eq!(Some(leaf), rec.leaf().map(|l| l.hash()));
    assert_eq!(rec.channel, Some(paying.channel_key()));
    let reader = AttributionSettlement::new(settlement_addr, &payer_p);
    assert!(
        reader
            .verifyRecord(U256::from(batch_id), leaf, proof.clone())
            .call()
            .await?
    );
    assert!(
        !reader
            .verifyRecord(U256::from(batch_id), record_id, proof.clone())
            .call()
            .await?,
        "a record id is not a leaf"
    );
    assert_eq!(
        reader.spent(paying.channel_key()).call().await?,
        rec.fee,
        "the voucher channel is charged the fee"
    );
    let rep = svc.verify(record_id).await?;
    assert!(rep.ok(), "{rep:?}");
    assert!(rep.matched.iter().any(|m| m == "on-chain inclusion"));
    assert!(rep.matched.iter().any(|m| m == "engine"), "{rep:?}");
    // A record claiming an engine governance never accepted does not verify.
    let mut foreign = rec.clone();
    foreign.engine = "openledger-attribution/9.9.9".into();
    svc.records().put(foreign.to_bytes().into()).await?;
    let rep = svc.verify_content(foreign.id()).await?;
    assert!(
        rep.mismatched
            .iter()
            .any(|m| m.starts_with("engine") && m.contains("allowedEngine")),
        "{rep:?}"
    );
    let rep = svc.verify(free_id).await?;
    assert_eq!(rep.mismatched.len(), 1, "{rep:?}");
    assert!(rep.mismatched[0].contains("no settled batch"));
    // Tampered: one weight moved → another id → not in the batch root.
    let mut t = rec.clone();
    t.contributions[0].weight_ppm -= 1;
    t.contributions
        .last_mut()
        .ok_or(eyre!("no credits"))?
        .weight_ppm += 1;
    if t.contributions.len() == 1 {
        t.fee += U256::from(1);
    }
    let t_leaf = t.leaf().ok_or(eyre!("charged"))?.hash();
    assert!(
        !reader
            .verifyRecord(U256::from(batch_id), t_leaf, proof.clone())
            .call()
            .await?
    );
    // Not in any batch.
    assert!(
        !reader
            .verifyRecord(U256::from(batch_id), free_id, proof)
            .call()
            .await?
    );
    let fv: serde_json::Value = reqwest::get(format!("{base}/api/attribution/{free_id}"))
        .await?
        .json()
        .await?;
    assert!(fv["batch"].is_null() && fv["pending"] == false);
    let missing = reqwest::get(format!("{base}/api/attribution/{}", B256::repeat_byte(1))).await?;
    assert_eq!(missing.status(), 404);

    // Every wei of the fee is credited: treasury + model owner + contributors.
    let params = openledger_protocol::bindings::ProtocolParams::new(
        devnet.deployments.contracts.params,
        &payer_p,
    );
    let treasury = params.treasury().call().await?;
    let mut accounts: Vec<Address> = vec![treasury, acct(1).address()];
    accounts.extend((2..5).map(|i| acct(i).address()));
    accounts.sort();
    accounts.dedup();
    let mut sum = U256::ZERO;
    for a in &accounts {
        sum += crate::attacks::owed(&reader, *a).await?;
    }
    assert_eq!(sum, fee, "credits add up to the fee");
    let escrow = reader.escrowOf(payer.address()).call().await?;
    assert_eq!(escrow, U256::from(10u64).pow(U256::from(16u64)) - fee);

    // Earnings API and claim: credits are pending for the batch's challenge window (10 s on
    // this devnet), not claimable; then the credited contributor is paid in OPEN.
    let winner = acct(3);
    let earnings = || async {
        let v: serde_json::Value =
            reqwest::get(format!("{base}/api/earnings/{}", winner.address()))
                .await?
                .json()
                .await?;
        let n = |k: &str| -> Result<U256> { Ok(v[k].as_str().ok_or(eyre!("{v}"))?.parse()?) };
        Ok::<_, eyre::Report>((n("earned")?, n("claimable")?, n("pending")?, v))
    };
    let (earned, claimable, pending_wei, earn) = earnings().await?;
    assert!(earned > U256::ZERO, "{earn}");
    assert_eq!((claimable, pending_wei), (U256::ZERO, earned), "{earn}");
    assert_eq!(
        svc.settlement_state(&record_id, true),
        openledger_attribution::settle::Settlement::Settled {
            batch_id,
            final_at: earn["pendingUntil"].as_u64().unwrap_or_default()
        }
    );
    let paid = crate::attacks::claim_when_final(&rpc, settlement_addr, &winner).await?;
    assert_eq!(paid, earned);
    let (_, claimable, pending_wei, _) = earnings().await?;
    assert_eq!((claimable, pending_wei), (U256::ZERO, U256::ZERO));

    // API keys: signed request with a voucher → key → answers are charged under the voucher.
    let client = reqwest::Client::new();
    let post_key = |label: &'static str, body: serde_json::Value| {
        let client = client.clone();
        let kh = auth::sign_key_request(&payer, svc.domain(), label);
        let url = format!("{base}/api/keys");
        async move {
            let mut req = client.post(url).json(&body);
            for (k, v) in kh? {
                req = req.header(k, v);
            }
            Ok::<_, eyre::Report>(req.send().await?)
        }
    };
    let bearer_of = |key: &serde_json::Value| -> Result<HeaderMap> {
        let mut m = HeaderMap::new();
        m.insert(
            "authorization",
            HeaderValue::from_str(&format!(
                "Bearer {}",
                key["key"].as_str().ok_or(eyre!("{key}"))?
            ))?,
        );
        Ok(m)
    };
    let small = voucher(&payer, 0, 2, worst)?;
    let key: serde_json::Value = post_key(
        "laptop",
        serde_json::json!({"label": "laptop", "voucher": small}),
    )
    .await?
    .json()
    .await?;
    let bearer = bearer_of(&key)?;
    let c = svc
        .authorize(&bearer, &pending("r3"))
        .await
        .map_err(|e| eyre!("{e}"))?
        .ok_or(eyre!("free?"))?;
    assert_eq!(c.payer, payer.address());
    assert_eq!(c.voucher, small);
    // r3 holds the whole cap of channel 2 while it runs: a second request is refused
    let e = svc
        .authorize(&bearer, &pending("r4"))
        .await
        .err()
        .ok_or(eyre!("over the key's voucher"))?;
    assert_eq!(e.kind, "voucher_exhausted");
    // a top-up on the same channel; a lower cap is refused; another account's voucher too
    let top_up = |v: &auth::SignedVoucher| {
        let mut req = client
            .post(format!("{base}/api/keys/voucher"))
            .json(&serde_json::json!({"voucher": v}));
        for (k, val) in bearer.iter() {
            req = req.header(k.as_str(), val.to_str().unwrap_or_default());
        }
        req.send()
    };
    let r = top_up(&voucher(&payer, 0, 2, worst * U256::from(2))?).await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    assert!(
        svc.authorize(&bearer, &pending("r4")).await.is_ok(),
        "topped up"
    );
    let r = top_up(&voucher(&payer, 0, 2, worst)?).await?;
    assert_eq!(r.status(), 400);
    let r = top_up(&voucher(&acct(6), 0, 2, deposit)?).await?;
    assert_eq!(r.status(), 401);
    svc.abandoned("r3");
    svc.abandoned("r4");
    // a key with no voucher identifies its owner but pays nothing; a forged voucher gets no key
    let bare: serde_json::Value = post_key("bare", serde_json::json!({"label": "bare"}))
        .await?
        .json()
        .await?;
    let e = svc
        .authorize(&bearer_of(&bare)?, &pending("r5"))
        .await
        .err()
        .ok_or(eyre!("a key with no voucher paid"))?;
    assert_eq!(e.kind, "payment_required");
    let mut forged_v = small.clone();
    forged_v.cumulative = deposit;
    let r = post_key(
        "forged",
        serde_json::json!({"label": "forged", "voucher": forged_v}),
    )
    .await?;
    assert_eq!(r.status(), 401);

    // The watchtower. A watcher sharing the attributor's record store finds the honest batch
    // verifies; a watcher with its own empty store fetches the record from the attributor's
    // announced endpoint but, without the transcript, reports it skipped, never ok.
    use openledger_attribution::watch::{SkipReason, WatchConfig, Watcher};
    let mut w = Watcher::open(
        svc.clone(),
        WatchConfig {
            dir: dir.path().join("watch"),
            ..Default::default()
        },
    )
    .await?;
    let reports = w.step().await?;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!((r.batch_id, r.root_ok), (batch_id, true), "{r:?}");
    assert_eq!(r.ok, vec![record_id], "{r:?}");
    assert!(w.step().await?.is_empty(), "the cursor moved on");
    let staking = openledger_protocol::bindings::AttributorStaking::new(
        devnet.deployments.contracts.staking,
        provider(&rpc, &acct(0))?,
    );
    send(staking.setEndpoint(base.clone())).await?;
    let mut cfg2 = AttributionConfig::new(
        &rpc,
        &devnet.deployments,
        dir.path().join("watcher-2"),
        devnet
            .datadir
            .join("datanets")
            .join("content")
            .display()
            .to_string(),
    );
    cfg2.tokenizer = Some(dir.path().join("tokenizer.json"));
    let other = AttributionService::open(cfg2).await?;
    let mut w2 = Watcher::open(
        other.clone(),
        WatchConfig {
            dir: dir.path().join("watch-2"),
            ..Default::default()
        },
    )
    .await?;
    let r2 = w2.step().await?;
    assert_eq!(r2.len(), 1, "{r2:?}");
    assert!(r2[0].ok.is_empty(), "{r2:?}");
    assert_eq!(r2[0].skipped.len(), 1, "{r2:?}");
    assert_eq!(
        r2[0].skipped[0].1,
        SkipReason::TranscriptUnavailable,
        "{r2:?}"
    );
    assert!(
        other.records().get(&record_id).await.is_ok(),
        "the record was fetched from the endpoint"
    );

    // A dishonest batch: the attributor settles a record that gives the whole pool to the
    // contributor of fact 0, whose fact the answer does not contain. The contract cannot tell;
    // the watcher recomputes the record and says MISMATCH.
    let mut forged = rec.clone();
    forged.request_id = "r-forged".into();
    forged.contributions = vec![openledger_attribution::Credit {
        contribution: contribution_of[0].get(),
        weight_ppm: 1_000_000,
        ..rec.contributions[0].clone()
    }];
    let forged_id = forged.id();
    svc.records().put(forged.to_bytes().into()).await?;
    let forged_leaf = forged.leaf().ok_or(eyre!("charged"))?;
    let attributor = provider(&rpc, &acct(0))?;
    send(
        AttributionSettlement::new(settlement_addr, &attributor).submitBatch(
            forged_leaf.hash(),
            vec![paying.to_binding()],
            vec![forged_leaf.to_inference(0)],
        ),
    )
    .await?;
    let reports = w.step().await?;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert!(r.root_ok && r.ok.is_empty(), "{r:?}");
    assert_eq!(r.mismatched.len(), 1, "{r:?}");
    assert_eq!(r.mismatched[0].0, forged_id);
    assert!(
        r.mismatched[0]
            .1
            .iter()
            .any(|m| m.starts_with("contributions and weights")),
        "{r:?}"
    );
    let metrics = w.metrics().render();
    assert!(
        metrics.contains("openledger_watch_records_total{result=\"mismatch\"} 1")
            && metrics.contains("openledger_watch_records_total{result=\"ok\"} 1")
            && metrics.contains("openledger_watch_batches_total 2"),
        "{metrics}"
    );
    devnet.shutdown().await;
    Ok(())
}

/// `openledger_protocol::fees::split` (what settlement's credit lines and the UI show) is the
/// contract's rule: random fees and weights settled on chain move every balance by exactly what
/// it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fee_rule_in_rust_is_the_contracts() -> Result<()> {
    use openledger_protocol::bindings::ProtocolParams;
    use openledger_protocol::fees::{FeeSplitBps, split};
    let w = crate::attacks::World::start(30).await?;
    let payer = w.acct(6);
    w.fund(&payer).await?;
    let attributor = crate::attacks::provider(&w.rpc, &w.acct(0))?;
    let settlement = AttributionSettlement::new(w.settlement_address()?, &attributor);
    let params = ProtocolParams::new(w.devnet.deployments.contracts.params, &attributor);
    let s = params.feeSplit().call().await?;
    let bps = FeeSplitBps {
        treasury: s.treasuryBps,
        model_owner: s.modelOwnerBps,
    };
    let treasury = params.treasury().call().await?;
    // contributions 1..=3 of the world's Datanet belong to accounts 2..=4; account 1 owns the model
    let accounts: Vec<Address> = [treasury, w.acct(1).address()]
        .into_iter()
        .chain((2..5).map(|i| w.acct(i).address()))
        .collect();
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let v = auth::sign_voucher(
        &payer,
        &openledger_protocol::eip712::inference_domain(
            openledger_protocol::DEV_CHAIN_ID,
            w.settlement_address()?,
        ),
        &auth::VoucherTerms {
            attributor: w.acct(0).address(),
            model_id: 0,
            max_price_per_1k: U256::MAX,
            channel: U256::from(7),
            cumulative: U256::MAX,
            validity_secs: 600,
        },
    )?;
    let price = ModelRegistry::new(w.devnet.deployments.contracts.model_registry, &attributor)
        .getModel(U256::from(w.model_id))
        .call()
        .await?
        .pricePer1kTokens;
    for case in 0..12 {
        // 1 to 3 of the contributions, ppm weights summing to 1,000,000 (or none: fallback)
        let n = (next() % 4) as usize;
        let raw: Vec<u64> = (0..n).map(|_| next() % 1_000_000 + 1).collect();
        let total: u64 = raw.iter().sum();
        let mut ppm: Vec<u64> = raw.iter().map(|r| r * 1_000_000 / total.max(1)).collect();
        if let Some(first) = ppm.first_mut() {
            *first += 1_000_000 - raw.iter().map(|r| r * 1_000_000 / total).sum::<u64>();
        }
        let weights: Vec<U256> = ppm.iter().map(|w| U256::from(*w)).collect();
        let tokens = next() % 500 + 1;
        let fee = (price * U256::from(tokens)).div_ceil(U256::from(1000));
        let leaf = openledger_protocol::voucher::Leaf {
            record_id: alloy_primitives::keccak256(format!("fee-rule-{case}")),
            request_key: alloy_primitives::keccak256(format!("fee-rule-request-{case}")),
            payer: payer.address(),
            channel_key: v.channel_key(),
            model_id: U256::from(w.model_id),
            engine_id: alloy_primitives::keccak256(openledger_protocol::ENGINE),
            prompt_hash: B256::ZERO,
            answer_hash: B256::ZERO,
            prompt_tokens: tokens / 2,
            completion_tokens: tokens - tokens / 2,
            price_per_1k: price,
            fee,
            fallback: n == 0,
            shares: ppm
                .iter()
                .enumerate()
                .map(|(i, w)| (i as u64 + 1, *w as u32))
                .collect(),
        };
        let before = balances(&settlement, &accounts).await?;
        send(settlement.submitBatch(
            leaf.hash(),
            vec![v.to_binding()],
            vec![leaf.to_inference(0)],
        ))
        .await?;
        let after = balances(&settlement, &accounts).await?;
        let delta: Vec<U256> = after.iter().zip(&before).map(|(a, b)| *a - *b).collect();
        let pay = split(fee, bps, &weights);
        let mut expected = vec![
            pay.treasury,
            pay.model_owner,
            U256::ZERO,
            U256::ZERO,
            U256::ZERO,
        ];
        for (i, c) in pay.contributions.iter().enumerate() {
            expected[2 + i] += *c;
        }
        assert_eq!(
            delta, expected,
            "case {case}: fee {fee}, weights {weights:?}"
        );
    }
    Ok(())
}

async fn balances<P: Provider>(
    s: &AttributionSettlement::AttributionSettlementInstance<P>,
    who: &[Address],
) -> Result<Vec<U256>> {
    let mut out = Vec::new();
    for a in who {
        out.push(crate::attacks::owed(s, *a).await?);
    }
    Ok(out)
}
