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

/// Three rows of words unique to `topic` (no 3-gram shared with another topic).
fn rows_of(topic: &str) -> String {
    (0..3)
        .map(|r| {
            (0..24)
                .map(|i| format!("{topic}{r}x{i}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `rows_of(topic)` with the last word of every row changed to `tail`: every row a
/// near-duplicate of it.
fn near(topic: &str, tail: &str) -> Vec<u8> {
    rows_of(topic)
        .split("\n\n")
        .map(|row| match row.rsplit_once(' ') {
            Some((head, _)) => format!("{head} {tail}"),
            None => row.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_uploads_count_across_a_restart_unless_rejected_or_withdrawn() -> Result<()> {
    let mut h = Harness::start(None, ValidationConfig::default()).await?;
    let owner = h.client(0).await?;
    let d = owner
        .create_datanet("earlier", "", false, U256::ZERO)
        .await?;
    // Accepted, pending, uploaded but never contributed, rejected, withdrawn.
    let mut ids = Vec::new();
    for (i, topic) in [
        "accepted",
        "pending",
        "uncontributed",
        "rejected",
        "withdrawn",
    ]
    .into_iter()
    .enumerate()
    {
        let c = h.client(i + 1).await?;
        let r = c
            .upload_bytes(d, "f.txt", &[], rows_of(topic).into_bytes())
            .await?;
        ensure!(r.score == 100, "{topic}: {r:?}");
        ids.push(if topic == "uncontributed" {
            None
        } else {
            Some(c.contribute(d, &r).await?)
        });
    }
    let id = |i: usize| ids[i].ok_or_else(|| eyre::eyre!("no contribution {i}"));
    owner.approve(id(0)?).await?;
    owner.reject(id(3)?, "off topic").await?;
    h.client(5).await?.withdraw(id(4)?).await?;
    // Without a restart: the rejected upload no longer counts.
    let copier = h.client(6).await?;
    let r = copier
        .upload_bytes(d, "c.txt", &[], near("rejected", "one"))
        .await?;
    ensure!(r.score == 100, "a rejected upload still counts: {r:?}");

    h.restart_service().await?;
    let copier = h.client(6).await?;
    for (topic, want) in [
        ("accepted", 25),
        ("pending", 25),
        ("uncontributed", 25),
        ("withdrawn", 100),
        // The copy uploaded before the restart (not contributed) counts now.
        ("rejected", 25),
    ] {
        let r = copier
            .upload_bytes(d, &format!("{topic}.txt"), &[], near(topic, "two"))
            .await?;
        ensure!(
            r.score == want,
            "after a restart a near-copy of the {topic} upload scored {} (want {want}): {:?}",
            r.score,
            r.reasons
        );
    }
    // Withdrawn bytes contributed again on chain by their author, without a new upload:
    // that upload counts again (its rows are read back from the store).
    let author = h.client(7).await?;
    let r = author
        .upload_bytes(d, "f.txt", &[], rows_of("revived").into_bytes())
        .await?;
    let first = author.contribute(d, &r).await?;
    author.withdraw(first).await?;
    let r1 = copier
        .upload_bytes(d, "r1.txt", &[], near("revived", "one"))
        .await?;
    ensure!(r1.score == 100, "a withdrawn upload still counts: {r1:?}");
    // (The copy itself is rejected, so only the author's upload can count below.)
    let copy = copier.contribute(d, &r1).await?;
    owner.reject(copy, "a copy").await?;
    let second = author.contribute(d, &r).await?;
    h.svc.sync().await?;
    ensure!(
        h.svc.snapshot().await.contributions[&second.get()].upload_seq
            == h.svc.snapshot().await.contributions[&first.get()].upload_seq
    );
    let r2 = h
        .client(8)
        .await?
        .upload_bytes(d, "r2.txt", &[], near("revived", "two"))
        .await?;
    ensure!(
        r2.score == 25,
        "a contributed-again upload does not count: {r2:?}"
    );
    h.devnet.shutdown().await;
    Ok(())
}
