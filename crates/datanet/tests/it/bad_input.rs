//! Every bad input of the issue: a clear error, nothing stored, nothing changed.

use crate::common::{Harness, api_kind};
use alloy_primitives::{U256, keccak256};
use eyre::{Result, ensure};
use openledger_datanet::auth;
use openledger_datanet::validate::ValidationConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_and_leave_nothing() -> Result<()> {
    let cfg = ValidationConfig {
        max_bytes: 64 * 1024,
        ..Default::default()
    };
    let h = Harness::start(None, cfg).await?;
    let owner = h.client(0).await?;
    let alice = h.client(1).await?;
    let bob = h.client(2).await?;
    let d = owner
        .create_datanet("bad inputs", "", false, U256::ZERO)
        .await?;
    let good = b"a first honest paragraph about tide pools\n\nand a second one about kelp forests"
        .to_vec();
    let r = alice.upload_bytes(d, "good.txt", &[], good.clone()).await?;
    let id = alice.contribute(d, &r).await?;
    h.svc.sync().await?;
    let before_store = h.store.list().await?;
    let before_index = h.svc.snapshot().await;

    let expect = |r: Result<(u16, String, String)>, status: u16, kind: &str| -> Result<String> {
        let (s, k, m) = r?;
        ensure!(
            s == status && k == kind,
            "expected {status} {kind}, got {s} {k}: {m}"
        );
        Ok(m)
    };
    // Oversized file.
    expect(
        api_kind(
            alice
                .upload_bytes(d, "big.txt", &[], vec![b'a'; 100 * 1024])
                .await,
        ),
        413,
        "too_large",
    )?;
    // Invalid UTF-8.
    expect(
        api_kind(
            alice
                .upload_bytes(d, "bin.txt", &[], vec![b'o', b'k', 0xff, 0xfe])
                .await,
        ),
        422,
        "invalid_utf8",
    )?;
    // Malformed JSONL line, with its number.
    let m = expect(
        api_kind(
            alice
                .upload_bytes(
                    d,
                    "x.jsonl",
                    &[],
                    b"{\"text\":\"ok\"}\n{\"text\":\"ok too\"}\n{\"txt\":1}\n".to_vec(),
                )
                .await,
        ),
        422,
        "malformed_jsonl",
    )?;
    ensure!(m.contains("line 3"), "{m}");
    // Duplicate content (already a pending contribution).
    expect(
        api_kind(bob.upload_bytes(d, "copy.txt", &[], good.clone()).await),
        409,
        "duplicate_content",
    )?;
    // Path-traversal and unsupported names.
    for name in ["../../etc/passwd.txt", "a/b.txt", "..\\x.md", "evil.sh"] {
        expect(
            api_kind(
                alice
                    .upload_bytes(d, name, &[], b"fine text".to_vec())
                    .await,
            ),
            400,
            "bad_name",
        )?;
    }
    // Unknown Datanet.
    expect(
        api_kind(
            alice
                .upload_bytes(999, "n.txt", &[], b"fine text".to_vec())
                .await,
        ),
        404,
        "datanet_not_found",
    )?;

    // Signatures: forged (claims another signer), expired, replayed nonce.
    let http = reqwest::Client::new();
    let body = b"signature test text about coral".to_vec();
    let hash = keccak256(&body);
    let domain = auth::domain(h.svc.chain_id(), h.svc.registry());
    let send = |hdrs: Vec<(&'static str, String)>| {
        let mut req = http
            .post(format!("{}/{d}/uploads?name=s.txt", h.api))
            .header(auth::headers::CONTENT_HASH, hash.to_string())
            .body(body.clone());
        for (k, v) in hdrs {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await?;
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await?;
            Ok::<_, eyre::Report>((
                status,
                v["error"]["type"].as_str().unwrap_or("").to_string(),
            ))
        }
    };
    let alice_key = &h.devnet.accounts[1].signer;
    let mut forged = auth::sign(alice_key, &domain, "upload", d, hash, 60)?;
    for (k, v) in forged.iter_mut() {
        if *k == auth::headers::SIGNER {
            *v = bob.address().to_string();
        }
    }
    ensure!(send(forged).await? == (401, "bad_signature".into()));
    let expired = auth::sign_with(
        alice_key,
        &domain,
        "upload",
        d.get(),
        hash,
        U256::from(1),
        auth::now() - 10,
    )?;
    ensure!(send(expired).await? == (401, "expired_signature".into()));
    let wrong_content = auth::sign(alice_key, &domain, "upload", d, keccak256(b"other"), 60)?;
    ensure!(send(wrong_content).await? == (401, "bad_signature".into()));
    ensure!(send(vec![]).await? == (401, "missing_signature".into()));
    let once = auth::sign(alice_key, &domain, "upload", d, hash, 60)?;
    ensure!(send(once.clone()).await?.0 == 200);
    ensure!(send(once).await? == (401, "replayed_nonce".into()));

    // Curation by a non-curator: the transaction reverts, the status stays Pending.
    let err = bob.approve(id).await;
    ensure!(format!("{err:?}").contains("NotCurator"), "{err:?}");

    // Nothing stored or changed, except the one good signed upload.
    h.svc.sync().await?;
    let after = h.store.list().await?;
    ensure!(
        after.len() == before_store.len() + 1 && after.contains(&hash),
        "{after:?}"
    );
    ensure!(h.store.staged_count().await? == 0);
    let snap = h.svc.snapshot().await;
    ensure!(snap.contributions == before_index.contributions);
    ensure!(snap.uploads[&d.get()].len() == 2);
    h.devnet.shutdown().await;
    Ok(())
}

/// A transaction refused before it is sent (its gas estimate reverts) must not cost the
/// client a nonce: before, the next transaction waited forever behind the gap (seen as a hung
/// `publish` retry in the train tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_does_not_stall_the_next() -> Result<()> {
    let h = Harness::start(None, ValidationConfig::default()).await?;
    let owner = h.client(0).await?;
    let stranger = h.client(1).await?;
    let d = owner
        .create_datanet("nonces", "", false, U256::ZERO)
        .await?;
    for _ in 0..2 {
        // not the owner, and no such contribution: both revert at the estimate
        ensure!(stranger.approve(999).await.is_err(), "approve must revert");
        ensure!(owner.approve(999).await.is_err(), "approve must revert");
    }
    let next = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let r = stranger
            .upload_bytes(
                d,
                "after.txt",
                &[],
                b"a paragraph sent after a refusal".to_vec(),
            )
            .await?;
        let id = stranger.contribute(d, &r).await?;
        owner.approve(id).await?;
        Ok::<_, eyre::Report>(id)
    })
    .await;
    ensure!(
        matches!(next, Ok(Ok(_))),
        "the transactions after a refused one must be mined: {next:?}"
    );
    Ok(())
}
