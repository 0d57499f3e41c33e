//! Restarts between a contribution and its event, and during an upload.

use crate::common::Harness;
use alloy_primitives::U256;
use bytes::Bytes;
use eyre::{Result, ensure};
use openledger_datanet::validate::ValidationConfig;
use openledger_datanet::{IndexState, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_nothing_and_duplicates_nothing() -> Result<()> {
    let mut h = Harness::start(None, ValidationConfig::default()).await?;
    let owner = h.client(0).await?;
    let alice = h.client(1).await?;
    let d = owner
        .create_datanet("restarts", "", false, U256::ZERO)
        .await?;
    let r = alice
        .upload_bytes(
            d,
            "one.txt",
            &[],
            b"a note about herons fishing at dawn".to_vec(),
        )
        .await?;

    // The service goes down after the upload; the contribution and its approval happen while
    // it is down.
    h.stop_service();
    let applied_before = h.svc.snapshot().await.events_applied;
    let id = alice.contribute(d, &r).await?;
    owner.approve(id).await?;
    h.restart_service().await?;
    let snap = h.svc.snapshot().await;
    ensure!(snap.contributions.len() == 1);
    ensure!(snap.contributions[&id.get()].status == Status::Accepted);
    ensure!(
        snap.datanets[&d.get()].accepted == vec![id],
        "{:?}",
        snap.datanets[&d.get()].accepted
    );
    ensure!(snap.events_applied == applied_before + 2);
    // The upload record survived, so the version can be published.
    let alice = h.client(1).await?;
    let owner = h.client(0).await?;
    owner.publish(d).await?;
    ensure!(owner.verify(d, 0).await?.ok());

    // Restarting again replays nothing; the file on disk equals the live index.
    let before = h.svc.snapshot().await;
    h.restart_service().await?;
    let after = h.svc.snapshot().await;
    ensure!(after == before);
    ensure!(IndexState::load(&h.dir.path().join("svc"))? == after);

    // An upload cut off mid-stream stores nothing; the same file then uploads fine.
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"half of a note about otters ")),
        Err(std::io::Error::other("client died")),
    ];
    let full = b"half of a note about otters and the rest of it".to_vec();
    let hash = alloy_primitives::keccak256(&full);
    let cut = alice
        .upload_body(
            d,
            "otters.txt",
            &[],
            hash,
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    ensure!(cut.is_err());
    let stored = h.store.list().await?;
    let mut clean = false;
    for _ in 0..50 {
        if h.store.staged_count().await? == 0 {
            clean = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(clean, "a cut-off upload left a staged object");
    ensure!(!stored.contains(&hash));
    // A new client (the cut connection is not reused from the old client's pool).
    let alice = h.client(1).await?;
    let ok = alice.upload_bytes(d, "otters.txt", &[], full).await?;
    ensure!(ok.content_hash == hash);
    h.devnet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_picks_up_events_without_requests() -> Result<()> {
    let h = Harness::start(None, ValidationConfig::default()).await?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let follower = h.svc.spawn_follower(rx);
    let owner = h.client(0).await?;
    let d = owner
        .create_datanet("followed", "", false, U256::ZERO)
        .await?;
    let mut seen = false;
    for _ in 0..50 {
        if h.svc.snapshot().await.datanets.contains_key(&d.get()) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(seen, "the follower did not index DatanetCreated");
    let _ = stop.send(true);
    follower.await?;
    let applied = h.svc.snapshot().await.events_applied;
    h.svc.sync().await?;
    ensure!(
        h.svc.snapshot().await.events_applied == applied,
        "an event was applied twice"
    );
    h.devnet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_read_is_not_accepted_twice_across_a_restart() -> Result<()> {
    let mut h = Harness::start(None, ValidationConfig::default()).await?;
    let owner = h.client(0).await?;
    let d = owner
        .create_datanet("replays", "", true, U256::from(1000u64))
        .await?;
    let r = owner
        .upload_bytes(
            d,
            "one.txt",
            &[],
            b"a note about cormorants drying their wings".to_vec(),
        )
        .await?;
    let c = owner.contribute(d, &r).await?;
    h.svc.sync().await?;
    let headers = openledger_datanet::auth::sign(
        &h.devnet.accounts[0].signer,
        &openledger_datanet::auth::domain(h.svc.chain_id(), h.svc.registry()),
        "read",
        d,
        r.content_hash,
        300,
    )?;
    let read = |api: String| {
        let headers = headers.clone();
        async move {
            let mut req =
                reqwest::Client::new().get(format!("{api}/{d}/contributions/{c}/content"));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            eyre::Ok((
                status,
                body["error"]["type"].as_str().unwrap_or("").to_string(),
            ))
        }
    };
    ensure!(read(h.api.clone()).await?.0 == 200);
    let again = read(h.api.clone()).await?;
    ensure!(again == (401, "replayed_nonce".into()), "{again:?}");
    h.restart_service().await?;
    let after = read(h.api.clone()).await?;
    ensure!(
        after == (401, "replayed_nonce".into()),
        "after a restart: {after:?}"
    );
    ensure!(h.dir.path().join("svc/nonces.log").exists());
    Ok(())
}
